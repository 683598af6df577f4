"""Issue 24's classes of bad input, each at its mechanism: a silently wrong result or a crash
becomes one clear error (or the right diagnosis)."""
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- aa-run protocol: no silent rounding
def test_a_frame_interval_not_a_whole_number_of_steps_is_refused():
    from openmm_cgkd.data.aamd import Protocol, ProtocolError

    Protocol(timestep_fs=2.0, frame_interval_ps=1.0, production_ps=10.0).validate()
    with pytest.raises(ProtocolError, match="not a whole number of 2.0 fs steps"):
        Protocol(timestep_fs=2.0, frame_interval_ps=0.0035, production_ps=0.035).validate()
    with pytest.raises(ProtocolError, match="production length 10.5 ps is not a whole number"):
        Protocol(timestep_fs=2.0, frame_interval_ps=1.0, production_ps=10.5).validate()
    with pytest.raises(ProtocolError, match="timestep_fs must be finite"):
        Protocol(timestep_fs=math.inf).validate()


# ---------------------------------------------------------------- force units where data enter training
@pytest.mark.parametrize("scale,word,advice", [(1 / 41.84, "SMALL", "multiply them by 41.84"),
                                               (41.84, "LARGE", "divide them by 41.84")])
def test_cg_forces_41_84x_off_name_the_right_direction(scale, word, advice):
    from openmm_cgkd.plausibility import force_scale_problem

    f = np.random.default_rng(0).normal(0, 279.0, (20, 10, 3))
    assert force_scale_problem(f) is None
    msg = force_scale_problem(f * scale)
    assert word in msg and advice in msg
    assert "all zero" in force_scale_problem(np.zeros_like(f))


def _tiny_dataset(path, scale=1.0):
    from openmm_cgkd.training.synthetic import make_synthetic_system

    syn = make_synthetic_system(n_beads=(6, 6), box_nm=1.9, n_frames=12, steps_per_frame=5,
                                equilibration_steps=20, seed=3)
    ds = syn.dataset
    ds.forces = ds.forces * scale
    return ds.save(path)


@pytest.mark.parametrize("scale,word", [(1 / 41.84, "SMALL"), (0.0, "all zero")])
def test_training_refuses_implausible_forces_before_it_starts(tmp_path, scale, word):
    from openmm_cgkd.data.dataset import DatasetError
    from openmm_cgkd.training.config import TeachersConfig
    from openmm_cgkd.training.teachers import train_teachers

    data = _tiny_dataset(tmp_path / "d.h5", scale)
    cfg = TeachersConfig(dataset=str(data), out=str(tmp_path / "t"), members=1)
    with pytest.raises(DatasetError, match=word):
        train_teachers(cfg)
    assert not (tmp_path / "t" / "members").exists()  # refused before any member trained


# ---------------------------------------------------------------- AA inputs: energies, zeros, truncated files
def _aa(n_frames=4, n_atoms=30):
    import mdtraj as md

    from openmm_cgkd.data.external import AATrajectory

    top = md.Topology()
    chain = top.add_chain()
    for i in range(n_atoms):
        top.add_atom("Ar", md.element.argon, top.add_residue("AR", chain))
    rng = np.random.default_rng(0)
    L = 1.0
    pos = rng.uniform(0, L, (n_frames, n_atoms, 3))
    return dict(topology=top, masses=np.full(n_atoms, 39.9), positions=pos,
                forces=rng.normal(0, 500.0, pos.shape), boxes=np.repeat(np.eye(3)[None] * L, n_frames, 0),
                times=np.arange(n_frames, dtype=float))


def test_an_energy_series_shorter_than_the_trajectory_is_an_error():
    from openmm_cgkd.data.external import AATrajectory, InputError

    AATrajectory(**_aa(), potential_energy=np.zeros(4)).validate()
    with pytest.raises(InputError, match="one energy per frame"):
        AATrajectory(**_aa(), potential_energy=np.zeros(3)).validate()


def test_all_zero_aa_forces_are_named_as_such():
    from openmm_cgkd.data.external import AATrajectory, InputError

    kw = _aa()
    kw["forces"] = np.zeros_like(kw["forces"])
    with pytest.raises(InputError, match="all zero"):
        AATrajectory(**kw).validate()


def test_aa_forces_41_84x_too_large_are_called_too_large():
    from openmm_cgkd.data.external import AATrajectory, InputError

    kw = _aa()
    kw["forces"] = kw["forces"] * 41.84
    with pytest.raises(InputError, match="too LARGE"):
        AATrajectory(**kw).validate()


def test_a_truncated_trr_is_one_line(tmp_path):
    from mdtraj.formats import TRRTrajectoryFile

    from openmm_cgkd.data.external import InputError, read_trr

    kw = _aa(n_frames=6)
    path = tmp_path / "t.trr"
    with TRRTrajectoryFile(str(path), "w") as fh:
        c = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        fh._write(c(kw["positions"]), c(kw["times"]), np.arange(6, dtype=np.int32), c(kw["boxes"]),
                  np.zeros(6, np.float32), None, c(kw["forces"]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(data) // 12])  # cut inside the last frame
    with pytest.raises(InputError) as err:
        read_trr(path)
    assert "truncated or damaged" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- the Python API
@pytest.fixture(scope="module")
def ff(tmp_path_factory):
    from openmm_cgkd.bundle import build_untrained_bundle, untrained_config
    from openmm_cgkd.serving.forcefield import CGKDForceField

    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, rbf_type="gauss",
                           max_num_neighbors=48)
    return CGKDForceField(build_untrained_bundle(tmp_path_factory.mktemp("b") / "tiny", cfg))


def _lattice():
    from openmm_cgkd.topology import bead_topology_from_counts

    L = 1.5
    g = (np.arange(3) + 0.5) * L / 3
    pos = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    pos += np.random.default_rng(0).uniform(-0.05, 0.05, pos.shape)
    return bead_topology_from_counts({"Cho": 7, "Cl": 7, "Urea": 13}, np.eye(3) * L), pos


@pytest.mark.parametrize("case,expect", [
    ("angstrom", "are the positions in Angstrom"),
    ("coincident", "beads 0 and 1 are 0 nm apart"),
    ("inf_step", "timestep must be positive and finite"),
    ("nan_temperature", "temperature must be positive and finite"),
    ("wrong_unit", "timestep must be in fs"),
])
def test_the_api_refuses_what_cannot_be_simulated(ff, case, expect):
    from openmm import unit

    from openmm_cgkd.serving.forcefield import ServingError

    top, pos = _lattice()
    kw = {}
    if case == "angstrom":
        pos = pos * 10
    elif case == "coincident":
        pos[1] = pos[0]
    elif case == "inf_step":
        kw["timestep_fs"] = math.inf
    elif case == "nan_temperature":
        kw["temperature"] = math.nan
    elif case == "wrong_unit":
        kw["timestep_fs"] = 2 * unit.nanometer
    with pytest.raises(ServingError) as err:
        ff.create_simulation(top, pos, platform="CPU", threads=1, **kw)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_the_api_takes_openmm_quantities(ff):
    from openmm import unit

    top, pos = _lattice()
    sim = ff.create_simulation(top, pos, platform="CPU", threads=1, temperature=310 * unit.kelvin,
                               timestep_fs=0.004 * unit.picoseconds, friction_per_ps=2.0 / unit.picosecond)
    integ = sim.integrator
    assert integ.getStepSize().value_in_unit(unit.femtosecond) == pytest.approx(4.0)
    assert integ.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(310.0)
    assert integ.getFriction().value_in_unit(unit.picosecond ** -1) == pytest.approx(2.0)


def test_a_bead_lighter_than_hydrogen_is_refused_at_load():
    from openmm_cgkd.errors import BundleError
    from openmm_cgkd.topology import BeadType

    BeadType("Cl", "CL", ["CL"], 35.45)
    with pytest.raises(BundleError, match="at least 1 Da"):
        BeadType("Cl", "CL", ["CL"], 1e-6)
