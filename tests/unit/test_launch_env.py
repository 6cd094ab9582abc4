"""What mpiray sets before MPI starts: the Slurm pmi2 workaround and, on one host, UCX without
its memory hooks; each only where it applies."""

from importlib import metadata

from mpiray._comm.mpi import _slurm_pmi2_workaround

SRUN_PMI2 = {"SLURM_MPI_TYPE": "pmi2", "PMI_FD": "11", "PMI_RANK": "0", "PMI_SIZE": "2",
             "SLURM_STEP_ID": "0"}


def _has_mpich_wheel():
    try:
        metadata.distribution("mpich")
        return True
    except metadata.PackageNotFoundError:
        return False


def test_srun_pmi2_with_the_mpich_wheel_uses_ofi():
    env = dict(SRUN_PMI2)
    assert _slurm_pmi2_workaround(env) == _has_mpich_wheel()
    assert env.get("MPIR_CVAR_CH4_NETMOD") == ("ofi" if _has_mpich_wheel() else None)


def test_hydra_inside_an_allocation_is_left_alone():
    env = dict(SRUN_PMI2, MPI_LOCALNRANKS="2", PMI_HOSTNAME="node1")
    assert not _slurm_pmi2_workaround(env) and "MPIR_CVAR_CH4_NETMOD" not in env


def test_a_netmod_the_user_chose_is_kept():
    env = dict(SRUN_PMI2, MPIR_CVAR_CH4_NETMOD="ucx")
    assert not _slurm_pmi2_workaround(env) and env["MPIR_CVAR_CH4_NETMOD"] == "ucx"


def test_other_launchers_are_left_alone():
    for env in ({}, {"PMI_FD": "5", "PMI_RANK": "0"}, dict(SRUN_PMI2, SLURM_MPI_TYPE="pmix")):
        env = dict(env)
        assert not _slurm_pmi2_workaround(env) and "MPIR_CVAR_CH4_NETMOD" not in env


def test_ucx_hooks_go_off_only_on_one_host(monkeypatch):
    import sys

    from mpiray._comm.mpi import _ucx_hooks_off, single_host_hint

    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    one_host = [{}, {"PMI_SIZE": "1"}, {"PMI_SIZE": "4", "MPI_LOCALNRANKS": "4", "PMI_RANK": "0"},
                {"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_LOCAL_SIZE": "3"},
                {"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_NUM_NODES": "1"}]
    many = [{"PMI_SIZE": "4", "MPI_LOCALNRANKS": "2"},
            {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "1"},
            {"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_NUM_NODES": "2"},
            {"PMI_SIZE": "2", "PMI_RANK": "0"},  # a launcher that does not say: assume many
            # mpiexec across the allocation, from inside a one-node srun step
            {"PMI_SIZE": "8", "MPI_LOCALNRANKS": "4", "SLURM_STEP_ID": "0",
             "SLURM_STEP_NUM_NODES": "1", "SLURM_STEP_NUM_TASKS": "1"},
            {"OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "SLURM_STEP_ID": "0",
             "SLURM_STEP_NUM_NODES": "1", "SLURM_STEP_NUM_TASKS": "1"}]
    for env in one_host:
        assert single_host_hint(env), env
        assert _ucx_hooks_off(env) and env["UCX_MEM_EVENTS"] == "no"
    for env in many:
        assert not single_host_hint(env), env
        assert not _ucx_hooks_off(env) and "UCX_MEM_EVENTS" not in env
    mine = {"UCX_MEM_EVENTS": "yes"}
    assert not _ucx_hooks_off(mine) and mine["UCX_MEM_EVENTS"] == "yes"  # the user's choice stays


def test_ucx_hooks_are_left_alone_once_mpi_is_loaded(monkeypatch):
    import sys

    from mpiray._comm.mpi import _ucx_hooks_off

    monkeypatch.setitem(sys.modules, "mpi4py.MPI", object())
    env = {}
    assert not _ucx_hooks_off(env) and "UCX_MEM_EVENTS" not in env
