"""What mpiray sets before MPI starts: only the Slurm pmi2 workaround, only where it applies."""

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
