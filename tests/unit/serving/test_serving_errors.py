"""CGKDForceField: every bad input gets a clear error naming what is wrong."""
import numpy as np
import pytest

from openmm_cgkd.bundle import BundleNotFoundError, build_untrained_bundle, untrained_config
from openmm_cgkd.serving.forcefield import CGKDForceField, ServingError
from openmm_cgkd.topology import bead_topology, bead_topology_from_counts

BOX = np.eye(3) * 1.5


@pytest.fixture(scope="module")
def ff(tmp_path_factory):
    cfg = untrained_config(cutoff_nm=0.6, embedding_dim=8, num_layers=1, num_rbf=4, max_num_neighbors=32)
    return CGKDForceField(build_untrained_bundle(tmp_path_factory.mktemp("b") / "tiny", cfg))


def _top(box=BOX):
    return bead_topology_from_counts({"Cho": 2, "Cl": 2, "Urea": 4}, box)


def _positions(n=8):
    return np.random.default_rng(0).uniform(0, 1.5, (n, 3))


def test_missing_bundle(tmp_path):
    with pytest.raises(BundleNotFoundError, match="not found.*no-such-model"):
        CGKDForceField("no-such-model")
    with pytest.raises(FileNotFoundError, match="not found"):
        CGKDForceField(tmp_path / "nowhere")


def test_unknown_bead_type(ff):
    top = bead_topology(["Cho", "Cl", "Water"], BOX)  # residue WAT
    with pytest.raises(ServingError, match=r"unknown bead type: atom 2 \(residue 'WAT', atom 'WAT'\).*Cho \(CHO/CHO\)"):
        ff.create_system(top)


def test_box_shorter_than_twice_cutoff(ff):
    with pytest.raises(ServingError, match=r"box.*at least twice the cutoff 0.6"):
        ff.create_system(_top(np.eye(3) * 1.1))
    with pytest.raises(ServingError, match="at least twice"):
        ff.create_system(_top(), box_vectors=[1.5, 1.5, 1.0])


def test_non_periodic_topology(ff):
    with pytest.raises(ServingError, match="non-periodic topology for a periodic model"):
        ff.create_system(_top(box=None))
    # box_vectors supply the missing box
    assert ff.create_system(_top(box=None), box_vectors=BOX).usesPeriodicBoundaryConditions()


def test_particle_count_mismatch(ff):
    with pytest.raises(ServingError, match="particle count mismatch: 7 positions for a topology of 8 beads"):
        ff.create_simulation(_top(), _positions(7), temperature=298.1, platform="Reference")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_positions(ff, bad):
    pos = _positions()
    pos[5, 1] = bad
    with pytest.raises(ServingError, match=r"NaN or inf for 1 bead\(s\), first indices \[5\]"):
        ff.create_simulation(_top(), pos, temperature=298.1, platform="Reference")


def test_bad_box_vectors_and_temperature(ff):
    with pytest.raises(ServingError, match="box_vectors contain NaN"):
        ff.create_system(_top(), box_vectors=[1.5, np.nan, 1.5])
    with pytest.raises(ServingError, match="lower triangular"):
        ff.create_system(_top(), box_vectors=[[1.5, 0.1, 0], [0, 1.5, 0], [0, 0, 1.5]])
    with pytest.raises(ServingError, match="temperature must be positive"):
        ff.create_simulation(_top(), _positions(), temperature=-5, platform="Reference")


def test_unknown_platform(ff):
    with pytest.raises(ValueError, match="platform 'Bogus' is not available here; available: .*Reference"):
        ff.create_simulation(_top(), _positions(), temperature=298.1, platform="Bogus")


def test_good_input_runs(ff):
    """The same inputs, corrected, give a working simulation (the errors above are not spurious)."""
    from openmm import unit

    sim = ff.create_simulation(_top(), _positions() * unit.nanometer, temperature=298.1, platform="Reference",
                               seed=1)
    sim.step(2)
    e = sim.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(e)


def test_cuda_graphs_need_static_shapes(ff):
    with pytest.raises(ServingError, match="CUDA graphs need static shapes.*graph-network"):
        ff.create_system(_top(), use_cuda_graphs=True)
