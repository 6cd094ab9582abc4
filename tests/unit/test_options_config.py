import pytest

from mpiray._config import Config, ConfigError
from mpiray._options import NodeAffinity, TaskOptions, UNIT, validate_options


def test_defaults_and_demand_units():
    o = TaskOptions()
    assert o.demand() == {"CPU": UNIT}
    o = validate_options(o, {"num_cpus": 0.5, "num_gpus": 0.25, "memory": 100, "resources": {"nvme": 1}})
    assert o.demand() == {"CPU": UNIT // 2, "GPU": UNIT // 4, "memory": 100 * UNIT, "nvme": UNIT}
    # Ray's precision: 0.1 + 0.2 adds up exactly in units
    assert validate_options(o, {"num_gpus": 0.1}).demand()["GPU"] * 3 == validate_options(o, {"num_gpus": 0.3}).demand()["GPU"]


@pytest.mark.parametrize("bad", [
    {"num_cpus": -1}, {"num_cpus": "1"}, {"num_cpus": float("nan")}, {"num_gpus": 1.5},
    {"memory": -5}, {"resources": {"CPU": 1}}, {"resources": {"x": -1}}, {"resources": [1]},
    {"num_returns": 0}, {"num_returns": 1.5}, {"max_retries": -2}, {"retry_exceptions": "yes"},
    {"retry_exceptions": [int]}, {"scheduling_strategy": "PACKED"}, {"num_cpu": 1},
    {"num_cpus": True},
])
def test_bad_options_are_rejected_with_the_name(bad):
    with pytest.raises((TypeError, ValueError)) as info:
        validate_options(TaskOptions(), bad)
    assert list(bad)[0].split("[")[0] in str(info.value)


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        validate_options(TaskOptions(), {"gpus": 1})
    assert "num_gpus" in str(info.value) and "max_retries" in str(info.value)


def test_affinity_and_retry_exceptions():
    o = validate_options(TaskOptions(), {"scheduling_strategy": NodeAffinity("n1", soft=True),
                                         "retry_exceptions": [ValueError]})
    assert o.retry_exceptions == (ValueError,) and o.scheduling_strategy.soft


def test_config_env_parsing_is_strict():
    c = Config.from_env({"MPIRAY_NUM_CPUS": "4", "MPIRAY_RESOURCES": '{"nvme": 2}',
                         "MPIRAY_SHARE_HOST_MEMORY": "no", "MPIRAY_NUM_NODES": "3"})
    assert c.num_cpus == 4 and c.resources == {"nvme": 2} and c.share_host_memory is False
    assert c.num_nodes == 3
    for env in ({"MPIRAY_NUM_CPUS": "four"}, {"MPIRAY_NUM_CPUS": "-1"}, {"MPIRAY_RESOURCES": "nvme=2"},
                {"MPIRAY_SHARE_HOST_MEMORY": "maybe"}, {"MPIRAY_NUM_NODES": "1.5"},
                {"MPIRAY_NUM_NODES": "0"}):
        with pytest.raises(ConfigError) as info:
            Config.from_env(env)
        assert list(env)[0] in str(info.value)


def test_init_args_override_env():
    c = Config.from_env({"MPIRAY_NUM_CPUS": "4"}).with_args(num_cpus=2, num_gpus=None)
    assert c.num_cpus == 2 and c.num_gpus is None
    with pytest.raises(ValueError):
        Config().with_args(num_nodes=0)
    with pytest.raises(ValueError):
        Config().with_args(resources={"x": "y"})


def test_resources_follow_the_allocation():
    from mpiray._node.resources import detect, node_resources
    from mpiray._options import UNIT

    env = {"SLURM_CPUS_ON_NODE": "6", "CUDA_VISIBLE_DEVICES": "2,3", "SLURM_MEM_PER_NODE": "4096"}
    host = detect(env)
    assert host == {"cpus": 6, "gpu_ids": ["2", "3"], "memory": 4096 << 20}
    # two raylets on the host split it; settings override detection
    res, gpus = node_resources(Config(), 1, 2, env)
    assert res == {"CPU": 3 * UNIT, "GPU": UNIT, "memory": (2048 << 20) * UNIT} and gpus == ["3"]
    res, gpus = node_resources(Config(num_cpus=1, num_gpus=0, resources={"nvme": 2}), 0, 1, env)
    assert res["CPU"] == UNIT and "GPU" not in res and res["nvme"] == 2 * UNIT and gpus == []
    assert detect({"CUDA_VISIBLE_DEVICES": "NoDevFiles"})["gpu_ids"] == []
    assert detect({"CUDA_VISIBLE_DEVICES": ""})["gpu_ids"] == []
    assert detect({"SLURM_JOB_GPUS": "0,1"})["gpu_ids"] == ["0", "1"]
