"""Frame selection of ``cgkd refine`` on analytic cases: pair distances placed by hand, and the
loss's handling of frames without AA forces against an explicit calculation."""
import numpy as np
import pytest
import torch

from openmm_cgkd.data.dataset import CGDataset
from openmm_cgkd.training.config import LossWeights
from openmm_cgkd.training.loss import distillation_loss, err
from openmm_cgkd.training.refine import (close_pair_counts, closest_contacts, coordination_below_contact,
                                         frames_dataset, pair_keys, select_frames)

BOX = np.eye(3) * 3.0
TYPES = np.array([0, 0, 1, 1])  # A A B B
NAMES = ["A", "B"]


def _frame(r_ab: float, r_aa: float, shift: float = 0.0) -> np.ndarray:
    """A0 at the origin, B0 at r_ab along x (across the periodic boundary when shifted), A1 at r_aa
    along y, B1 far from all."""
    x = np.array([[0.0, 0.0, 0.0], [0.0, r_aa, 0.0], [r_ab, 0.0, 0.0], [1.5, 1.5, 1.5]])
    return (x + [shift, 0, 0]) % 3.0


def _dataset(frames) -> CGDataset:
    pos = np.stack(frames)
    f = len(pos)
    return CGDataset(pos, np.ones_like(pos), np.repeat(BOX[None], f, 0), np.arange(f, dtype=float), TYPES, NAMES,
                     np.ones(4))


def test_closest_contacts_are_the_minimum_image_pair_distances():
    ds = _dataset([_frame(0.40, 0.50), _frame(0.36, 0.45, shift=2.9)])  # the second across the boundary
    c = closest_contacts(ds)
    assert [k for _, _, k in pair_keys(NAMES)] == ["A-A", "A-B", "B-B"]
    assert c["A-B"] == pytest.approx(0.36, abs=1e-6)
    assert c["A-A"] == pytest.approx(0.45, abs=1e-6)
    # B-B: frame 0, B0 at x = 0.40 and B1 at (1.5, 1.5, 1.5) (frame 1 moves both: 1.14 apart on x)
    assert c["B-B"] == pytest.approx(np.sqrt(1.1 ** 2 + 2 * 1.5 ** 2), abs=1e-5)


def test_close_pair_counts_and_coordination_count_pairs_below_the_contact():
    contacts = {"A-A": 0.45, "A-B": 0.36, "B-B": 1.0}
    frames = np.stack([_frame(0.30, 0.50), _frame(0.40, 0.40), _frame(0.35, 0.44, shift=2.95)])
    counts = close_pair_counts(frames, np.repeat(BOX[None], 3, 0), TYPES, NAMES, contacts)
    assert counts.tolist() == [[0, 1, 0], [1, 0, 0], [1, 1, 0]]
    # with a margin of 0.02 nm only pairs below contact - 0.02 count
    assert close_pair_counts(frames, np.repeat(BOX[None], 3, 0), TYPES, NAMES, contacts, 0.02).tolist() == \
        [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    coord = coordination_below_contact(counts, TYPES, NAMES)
    # A-B: 2 pairs in 3 frames over 2 A beads; A-A: 2 like pairs in 3 frames, each counted for both beads
    assert coord["A-B"] == {"per_a": pytest.approx(2 / 3 / 2), "per_b": pytest.approx(2 / 3 / 2)}
    assert coord["A-A"]["per_a"] == pytest.approx(2 * (2 / 3) / 2)
    assert coord["B-B"]["per_a"] == 0.0


def test_select_frames_takes_close_or_uncertain_frames_most_close_first():
    spread = np.array([1.0, 9.0, 2.0, np.nan, 1.0, 7.0])
    close = np.array([0, 0, 3, 0, 1, 1])
    assert select_frames(spread, close, 5.0, 10).tolist() == [1, 2, 3, 4, 5]  # NaN spread counts as high
    assert select_frames(spread, close, None, 10).tolist() == [2, 4, 5]
    # capped: most close pairs first (2), then among one close pair the higher spread (5 over 4)
    assert select_frames(spread, close, 5.0, 2).tolist() == [2, 5]
    assert select_frames(spread, np.zeros(6, int), 100.0, 3).tolist() == [3]
    with pytest.raises(ValueError):
        select_frames(spread, close[:3], 5.0, 2)


def test_frames_without_aa_forces_are_stored_with_zero_forces_and_refused_as_aa_data():
    from openmm_cgkd.data.dataset import DatasetError

    ds = _dataset([_frame(0.40, 0.50)])
    new = frames_dataset(ds, np.stack([_frame(0.3, 0.5), _frame(0.35, 0.5)]), np.repeat(BOX[None], 2, 0),
                         {"source": "test"})
    assert new.provenance["aa_forces"] is False and not np.any(new.forces)
    with pytest.raises(DatasetError):
        new.check_forces()


def test_loss_leaves_out_the_aa_term_of_frames_without_aa_forces():
    g = torch.Generator().manual_seed(0)
    pred = {"forces": torch.randn(3, 4, 3, generator=g), "bead_energies": torch.randn(3, 4, generator=g),
            "energy": torch.randn(3, generator=g)}
    batch = {"forces": torch.randn(3, 4, 3, generator=g), "label_forces": torch.randn(3, 4, 3, generator=g),
             "label_bead_energies": torch.randn(3, 4, generator=g), "label_energy": torch.randn(3, generator=g),
             "has_aa_forces": torch.tensor([True, False, True])}
    w = LossWeights(w_aa=2.0, w_ft=1.0, w_e=5.0)
    total, terms = distillation_loss(pred, batch, w)
    keep = [0, 2]
    expect_aa = err(pred["forces"][keep], batch["forces"][keep])
    expect = 2.0 * expect_aa + err(pred["forces"], batch["label_forces"]) \
        + 5.0 * err(pred["bead_energies"], batch["label_bead_energies"])
    assert float(terms["err_f_aa"]) == pytest.approx(float(expect_aa), rel=1e-6)
    assert float(total) == pytest.approx(float(expect), rel=1e-6)
    # no frame with AA forces: no F_AA term at all
    batch["has_aa_forces"] = torch.tensor([False, False, False])
    total, terms = distillation_loss(pred, batch, w)
    assert "err_f_aa" not in terms
    assert float(total) == pytest.approx(float(expect - 2.0 * expect_aa), rel=1e-6)
    # all frames with AA forces: as without the flag
    batch["has_aa_forces"] = torch.tensor([True, True, True])
    with_flag, _ = distillation_loss(pred, batch, w)
    del batch["has_aa_forces"]
    assert float(with_flag) == float(distillation_loss(pred, batch, w)[0])


def test_bonded_pairs_left_to_the_priors_are_no_contacts():
    """In a molecule the bonded (excluded) pairs are closer than any contact: left out, the closest
    contact and the counts below it are those of the pairs the wall acts on."""
    ds = _dataset([_frame(0.40, 0.50), _frame(0.36, 0.45)])
    bond = np.array([[0, 2]])  # A0-B0 bonded: their 0.36-0.40 nm are no contact
    c = closest_contacts(ds, excluded=bond)
    # the A-B contact is now A1-B0 or A0-B1 / A1-B1: every one of them is further than A0-B0
    assert c["A-B"] > 0.40 and c["A-A"] == pytest.approx(0.45, abs=1e-6)
    frames = np.stack([_frame(0.30, 0.50)])
    with_bond = close_pair_counts(frames, BOX[None], TYPES, NAMES, {"A-A": 0.45, "A-B": 0.36, "B-B": 1.0})
    without = close_pair_counts(frames, BOX[None], TYPES, NAMES, {"A-A": 0.45, "A-B": 0.36, "B-B": 1.0},
                                excluded=bond)
    assert with_bond.tolist() == [[0, 1, 0]] and without.tolist() == [[0, 0, 0]]
