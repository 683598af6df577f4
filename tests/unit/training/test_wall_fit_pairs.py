"""The wall is fitted on the pairs it acts on. On the dipeptide's AA frames (committed mapped
parts), with the default exclusions (1-2 and 1-3) the wall acts on the 1-4 pairs too: fitted on
them, it stays within a few kT on every AA frame; fitted on the 1-5 pair alone (as before the
fix) it reaches hundreds of kJ/mol there, which the networks then learned to cancel."""
from pathlib import Path

import numpy as np
import pytest

from openmm_cgkd.data.aamd import read_mapped
from openmm_cgkd.training.config import WallFitConfig
from openmm_cgkd.training.wall_fit import fit_wall

ROOT = Path(__file__).resolve().parents[3]
KT_300 = 2.494  # kJ/mol


@pytest.fixture(scope="module")
def dipeptide():
    ds = read_mapped(ROOT / "systems" / "dipeptide" / "aa")
    return ds.select_frames(np.arange(0, ds.n_frames, 10))  # 10,000 frames, 10 ps apart


def _max_wall_energy(ds, wall, exclusions: int) -> float:
    """Largest pair energy (kJ/mol) of ``wall`` over the frames, on the pairs it acts on (beyond
    ``exclusions`` bonds), computed here from its parameters: A exp(-k r) - A exp(-k r_c) below r_c."""
    w = wall.to_dict()
    near = {tuple(p) for p in ds.topology.excluded_pairs(exclusions).tolist()}
    worst = 0.0
    for i in range(ds.n_beads):
        for j in range(i + 1, ds.n_beads):
            if (i, j) in near:
                continue
            ti, tj = ds.bead_types[i], ds.bead_types[j]
            a, k, rc = w["prefactor_kj_mol"][ti][tj], w["decay_per_nm"][ti][tj], w["cutoff_nm"]
            r = np.linalg.norm(ds.positions[:, i] - ds.positions[:, j], axis=-1).min()
            if r < rc:
                worst = max(worst, a * np.exp(-k * r) - a * np.exp(-k * rc))
    return worst


def test_the_wall_fitted_on_its_own_pairs_stays_low_on_the_data(dipeptide):
    ds = dipeptide
    wall, report = fit_wall(ds, config=WallFitConfig(), exclusions=2)
    assert report["exclusions"] == 2
    assert _max_wall_energy(ds, wall, 2) < 4 * KT_300
    # fitted on the pairs more than 3 bonds apart but acting on the 1-4 pairs too: far above kT
    wrong, _ = fit_wall(ds, config=WallFitConfig(), exclusions=3)
    assert _max_wall_energy(ds, wrong, 3) < 4 * KT_300  # right where it was fitted ...
    assert _max_wall_energy(ds, wrong, 2) > 100 * KT_300  # ... wrong where it also acts


def test_set_ups_of_bonded_data_from_before_the_fix_are_made_again(dipeptide):
    """The set-up's fingerprint of bonded data names the pairs the wall is fitted on, so a set-up
    (and the pipeline's teachers stage) made with the old fit is made again; unbonded data (the
    DES) keep the fingerprint they had, so their finished teachers stay valid."""
    from openmm_cgkd.training.config import TeachersConfig
    from openmm_cgkd.training.synthetic import make_synthetic_system
    from openmm_cgkd.training.teachers import setup_fingerprint
    from openmm_cgkd.training.wall_fit import WALL_FIT_PAIRS

    cfg = TeachersConfig(dataset="data.h5", model={"architecture": "hipnn-ts"})
    assert setup_fingerprint(cfg, dipeptide)["wall_fit"] == WALL_FIT_PAIRS
    unbonded = make_synthetic_system(n_beads=(8, 8), box_nm=1.65, n_frames=3, steps_per_frame=5,
                                     equilibration_steps=10, seed=1).dataset
    assert "wall_fit" not in setup_fingerprint(cfg, unbonded)
