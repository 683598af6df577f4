"""CGDataset: round trip through HDF5 and validation of bad input."""
import numpy as np
import pytest

from openmm_cgkd.data.dataset import CGDataset, DatasetError, DistillationLabels


def _dataset(frames=4, beads=5, seed=0):
    rng = np.random.default_rng(seed)
    box = np.eye(3) * 2.0
    return CGDataset(
        positions=rng.uniform(0, 2, (frames, beads, 3)), forces=rng.normal(0, 50, (frames, beads, 3)),
        boxes=np.repeat(box[None], frames, 0), times=np.arange(frames, dtype=float),
        bead_types=np.array([0, 1, 1, 2, 2])[:beads], type_names=["Cho", "Cl", "Urea"],
        masses=np.array([104.17, 35.45, 60.06, 60.06, 60.06])[:beads], provenance={"made": "test"})


def test_round_trip_with_labels(tmp_path):
    ds = _dataset()
    path = ds.save(tmp_path / "d.h5")
    lab = DistillationLabels(ds.forces * 0.5, np.ones((4, 5)), np.full(4, 5.0), np.zeros((4, 5, 3)), {"k": 8})
    ds.save_labels(path, lab)
    back = CGDataset.load(path)
    np.testing.assert_array_equal(back.positions, ds.positions)
    np.testing.assert_array_equal(back.forces, ds.forces)
    assert back.type_names == ["Cho", "Cl", "Urea"]
    assert back.provenance == {"made": "test"}
    np.testing.assert_allclose(back.labels.forces, ds.forces * 0.5)
    assert back.labels.provenance == {"k": 8}
    assert back.select_frames(slice(1, 3)).n_frames == 2


@pytest.mark.parametrize("field,value,message", [
    ("forces", np.zeros((4, 4, 3)), "forces has shape"),
    ("positions", np.full((4, 5, 3), np.nan), "NaN"),
    ("bead_types", np.array([0, 1, 1, 2, 3]), "bead_types must index"),
    ("masses", np.zeros(5), "mass must be positive"),
    ("times", np.array([0.0, 1.0, 1.0, 2.0]), "strictly increasing"),
    ("boxes", np.repeat(np.eye(3)[None] * 20.0, 4, 0), None),
    ("boxes", np.repeat(np.eye(3)[None] * 0.02, 4, 0), "units nm"),
])
def test_bad_input_is_named(field, value, message):
    ds = _dataset()
    kwargs = {k: getattr(ds, k) for k in ("positions", "forces", "boxes", "times", "bead_types", "type_names", "masses")}
    kwargs[field] = value
    if message is None:
        CGDataset(**kwargs)
        return
    with pytest.raises(DatasetError, match=message):
        CGDataset(**kwargs)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        CGDataset.load(tmp_path / "nope.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        CGDataset.load(bad)
