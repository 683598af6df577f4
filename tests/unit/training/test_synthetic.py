"""The synthetic known-truth systems: OpenMM's energies and forces equal an independent numpy
evaluation of the pair potentials (energy sums, finite differences), for both pair forms."""
import numpy as np
import pytest

from openmm_cgkd.training.synthetic import (DEFAULT_PAIR_POTENTIAL, SOFT_PAIR_POTENTIAL, PairPotential,
                                            make_synthetic_system)


def _numpy_energy(x: np.ndarray, types: np.ndarray, box: float, pot: PairPotential) -> float:
    d = x[:, None, :] - x[None, :, :]
    d -= box * np.round(d / box)
    r = np.linalg.norm(d, axis=-1)
    iu = np.triu_indices(len(x), 1)
    return float(pot.pair_energy(r[iu], types[iu[0]], types[iu[1]]).sum())


@pytest.mark.parametrize("pot, n_beads, box", [(DEFAULT_PAIR_POTENTIAL, (10, 10), 1.65),
                                               (SOFT_PAIR_POTENTIAL, (8, 8, 8), 1.3)])
def test_truth_matches_an_independent_evaluation(pot, n_beads, box):
    s = make_synthetic_system(n_beads=n_beads, box_nm=box, n_frames=3, steps_per_frame=20, equilibration_steps=200,
                              potential=pot, seed=4)
    types = s.dataset.bead_types
    for f in range(3):
        x = s.dataset.positions[f].astype(np.float64)
        e = _numpy_energy(x, types, box, pot)
        assert s.true_energy[f] == pytest.approx(e, rel=1e-4, abs=1e-3)
        assert s.true_bead_energies[f].sum() == pytest.approx(e, rel=1e-6, abs=1e-6)
    # forces = -dU/dx by central differences on a few coordinates of frame 0
    x = s.dataset.positions[0].astype(np.float64)
    h = 1e-5
    for i, k in [(0, 0), (3, 1), (len(x) - 1, 2)]:
        xp, xm = x.copy(), x.copy()
        xp[i, k] += h
        xm[i, k] -= h
        fd = -(_numpy_energy(xp, types, box, pot) - _numpy_energy(xm, types, box, pot)) / (2 * h)
        assert s.true_forces[0, i, k] == pytest.approx(fd, rel=2e-3, abs=5e-2)
    # the labels are the truth plus noise of the requested size
    assert np.std(s.dataset.forces - s.true_forces) == pytest.approx(s.noise_sigma, rel=0.1)


def test_soft_form_is_finite_and_vanishes_at_its_range():
    pot = SOFT_PAIR_POTENTIAL
    r = np.array([0.0, 0.2, pot.sigma_nm[0, 0], 0.59])
    u = pot.pair_energy(np.where(r == 0, 1e-9, r), 0, 0)
    assert np.all(np.isfinite(u)) and u[0] == pytest.approx(pot.epsilon_kj_mol[0, 0])
    assert u[2] == 0.0 and u[3] == 0.0
    with pytest.raises(ValueError, match="form"):
        PairPotential(["A"], [[0.3]], [[1.0]], [10.0], form="gauss")
