"""Distillation labels of hipnn-ts bundles: the batched path (training_forward without a graph to
the weights) equals the frame-by-frame path through the bundle's TorchScript module (autograd) to
float32 round-off, for the shipped ensemble of 8 (member means, the member spread, one member) and
the shipped student (one network)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from openmm_cgkd.bundle import load_bundle, models_dir
from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.training import labels as labels_mod

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def frames():
    ds = CGDataset.load(ROOT / "systems" / "des" / "reline_252_cg.h5")
    return ds.select_frames(np.array([0, 700, 1499]))  # spread over the trajectory; 3 frames, 2 batches of 2


def _labels(bundle, ds, member, fast, monkeypatch):
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(labels_mod, "_stacked_network", lambda bundle: None)
        return labels_mod.predict_labels(bundle, ds, member=member, device="cpu", batch_size=2)


@pytest.mark.parametrize("name,member", [("des-teachers", None), ("des-teachers", 5), ("des-student", None)])
def test_batched_labels_equal_frame_by_frame(frames, name, member, monkeypatch):
    torch.set_num_threads(1)
    bundle = load_bundle(models_dir() / name)
    assert labels_mod._stacked_network(bundle) is not None  # the fast path applies
    fast = _labels(bundle, frames, member, True, monkeypatch)
    ref = _labels(bundle, frames, member, False, monkeypatch)
    scale = np.abs(ref.forces).max()
    assert np.abs(fast.forces - ref.forces).max() <= 1e-5 * scale
    np.testing.assert_allclose(fast.energy, ref.energy, rtol=1e-5)
    assert np.abs(fast.bead_energies - ref.bead_energies).max() <= 1e-5 * np.abs(ref.bead_energies).max()
    if name == "des-teachers" and member is None:
        assert ref.force_std.max() > 1.0  # a real spread, compared to round-off of the forces
        assert np.abs(fast.force_std - ref.force_std).max() <= 1e-5 * scale
    else:
        assert not fast.force_std.any() and not ref.force_std.any()
    assert fast.provenance == ref.provenance


def test_training_wall_from_the_network_pairs_equals_its_own_search(frames):
    """The training wall on the network's pair list (filtered to the wall's cutoff) equals the wall
    on its own neighbour search: per-bead energies and forces of a batch of real frames."""
    from openmm_cgkd.model.potential import PotentialConfig
    from openmm_cgkd.model.stacked import joined_pairs
    from openmm_cgkd.training.model import number_density
    from openmm_cgkd.training.stacked import StackedTrainable

    man = load_bundle(models_dir() / "des-teachers").manifest
    model = StackedTrainable(PotentialConfig.from_dict(dict(man.architecture)), 1, [0], man.wall,
                             number_density(frames.positions, frames.boxes))
    assert model.wall.cutoff_nm < model.network.cutoff_nm  # the shared path applies
    types = torch.from_numpy(frames.bead_types.astype(np.int64))
    pos, box = torch.from_numpy(frames.positions), torch.from_numpy(frames.boxes)
    ref_e, ref_f = model._wall_terms(types, pos, box)
    e, f = model._wall_terms(types, pos, box, joined_pairs(model.network.neighbors, pos, box))
    assert float(ref_f.abs().max()) > 1.0  # the wall acts on these frames
    torch.testing.assert_close(e, ref_e, rtol=1e-5, atol=1e-5 * float(ref_e.abs().max()))
    torch.testing.assert_close(f, ref_f, rtol=1e-5, atol=1e-5 * float(ref_f.abs().max()))
