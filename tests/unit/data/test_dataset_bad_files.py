"""CGDataset.load of damaged or mis-scaled files: a clear DatasetError, never a raw KeyError or a
dataset of isolated beads (Angstrom stored as nm)."""
import h5py
import numpy as np
import pytest

from openmm_cgkd.data.dataset import CGDataset, DatasetError, DistillationLabels
from openmm_cgkd.plausibility import bead_spacing_problem, median_nearest_neighbor_nm


def _lattice_dataset(spacing_nm=0.45, n_side=4, frames=3, scale=1.0):
    """Beads on a jittered cubic lattice (spacing ``spacing_nm``), everything times ``scale``."""
    rng = np.random.default_rng(0)
    g = (np.arange(n_side) + 0.5) * spacing_nm
    x = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    pos = x[None] + rng.normal(0, 0.02, (frames, len(x), 3))
    box = np.eye(3) * spacing_nm * n_side
    n = len(x)
    return CGDataset(positions=pos * scale, forces=rng.normal(0, 300, (frames, n, 3)),
                     boxes=np.repeat(box[None], frames, 0) * scale, times=np.arange(frames) * 0.5,
                     bead_types=np.arange(n) % 3, type_names=["Cho", "Cl", "Urea"], masses=np.full(n, 60.0))


def test_median_nearest_neighbour_matches_brute_force():
    rng = np.random.default_rng(4)
    box = np.array([[2.0, 0, 0], [0.3, 1.8, 0], [-0.4, 0.5, 2.2]])  # triclinic, reduced form
    x = rng.uniform(0, 1, (40, 3)) @ box
    best = []
    for i in range(len(x)):  # brute force over 27 images
        d = min(np.linalg.norm(x[j] + np.array([a, b, c]) @ box - x[i])
                for j in range(len(x)) if j != i for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1))
        best.append(d)
    assert median_nearest_neighbor_nm(x, box, max_beads=40) == pytest.approx(np.median(best), rel=1e-9)


def test_spacing_check_flags_ten_fold_unit_errors():
    ds = _lattice_dataset()
    assert bead_spacing_problem(ds.positions[0], ds.boxes[0]) is None
    assert "Angstrom" in bead_spacing_problem(ds.positions[0] * 10, ds.boxes[0] * 10)
    assert "overlap" in bead_spacing_problem(ds.positions[0] / 10, ds.boxes[0] / 10)
    # a droplet in a large box is fine: the check is local
    assert bead_spacing_problem(ds.positions[0], np.eye(3) * 20.0) is None


def test_load_refuses_angstrom_stored_as_nm(tmp_path):
    good = _lattice_dataset().save(tmp_path / "good.h5")
    assert CGDataset.load(good).n_beads == 64
    bad = _lattice_dataset(scale=10.0).save(tmp_path / "angstrom.h5")  # box 18 nm passes the box-length check
    with pytest.raises(DatasetError, match="Angstrom"):
        CGDataset.load(bad)


def test_load_without_type_names(tmp_path):
    path = _lattice_dataset().save(tmp_path / "d.h5")
    with h5py.File(path, "a") as h5:
        del h5.attrs["type_names"]
    with pytest.raises(DatasetError, match="lacks the root attribute 'type_names'"):
        CGDataset.load(path)
    with h5py.File(path, "a") as h5:
        h5.attrs["type_names"] = "[Cho, Cl"
    with pytest.raises(DatasetError, match="'type_names' is not valid JSON"):
        CGDataset.load(path)


@pytest.mark.parametrize("drop", ["forces", "bead_energies", "energy", "force_std"])
def test_load_with_incomplete_labels(tmp_path, drop):
    ds = _lattice_dataset()
    path = ds.save(tmp_path / "d.h5")
    f, n = ds.n_frames, ds.n_beads
    ds.save_labels(path, DistillationLabels(ds.forces, np.zeros((f, n)), np.zeros(f), np.zeros((f, n, 3))))
    assert CGDataset.load(path).labels is not None
    with h5py.File(path, "a") as h5:
        del h5["labels"][drop]
    with pytest.raises(DatasetError, match=rf"labels group lacks \['{drop}'\].*cgkd label"):
        CGDataset.load(path)
