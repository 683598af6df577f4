"""Stability: drift statistic on collapsing vs stationary trajectories; broken coordinates."""
import numpy as np
import pytest

from openmm_cgkd.analysis import assess_stability, cdf_drift, check_coordinates, make_trajectory

L, N_PER_TYPE, F = 4.0, 60, 50
TYPES = ["A"] * N_PER_TYPE + ["B"] * N_PER_TYPE


def _stationary(seed):
    """A fresh ideal-gas configuration every frame: statistically identical frames."""
    return np.random.default_rng(seed).random((F, 2 * N_PER_TYPE, 3)) * L


def _collapsing(seed):
    """Uniform at first, then every bead slides toward one of 6 centres: a liquid slowly
    collapsing into clusters (distances to the centres shrink to 20 %)."""
    rng = np.random.default_rng(seed)
    n = 2 * N_PER_TYPE
    centres = rng.random((6, 3)) * L
    which = np.arange(n) % 6
    d = rng.random((n, 3)) * L - centres[which]
    d -= L * np.round(d / L)
    scale = 1.0 - 0.8 * np.linspace(0.0, 1.0, F)
    xyz = centres[which][None] + scale[:, None, None] * d[None] + rng.normal(0, 0.02, (F, n, 3))
    return xyz % L


def _traj(xyz):
    return make_trajectory(xyz, TYPES, np.eye(3) * L, times=np.arange(len(xyz)) * 5.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_collapse_into_clusters_is_flagged(seed):
    rep = assess_stability(_traj(_collapsing(seed)), n_blocks=5)
    assert rep.clustering and not rep.stable
    for drift in rep.drift.values():
        assert drift.flagged
        assert drift.relative_change < -0.2
        assert drift.block_means_nm[-1] < drift.block_means_nm[0]
    # The time-resolved CDFs move to shorter merge distances: late block mean < early block mean.
    early, late = rep.blocks[0]["A"], rep.blocks[-1]["A"]
    assert np.sum(late.centers * late.values * late.widths) < np.sum(early.centers * early.values * early.widths)
    assert len(rep.blocks) == 5 and rep.block_frames[0] == (0, 10) and rep.block_frames[-1] == (40, 50)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stationary_trajectory_is_not_flagged(seed):
    rep = assess_stability(_traj(_stationary(seed)), n_blocks=5)
    assert rep.stable and not rep.clustering and rep.coordinates.ok
    for drift in rep.drift.values():
        assert not drift.flagged
        assert abs(drift.relative_change) < 0.05


def test_drift_does_not_depend_on_the_time_unit():
    xyz = _collapsing(3)
    from openmm_cgkd.analysis import frame_merge_distances

    merges = frame_merge_distances(_traj(xyz))
    a = cdf_drift(merges, np.arange(F) * 1.0)["A"]
    b = cdf_drift(merges, np.arange(F) * 1000.0)["A"]
    assert a.relative_change == pytest.approx(b.relative_change)
    assert a.t_statistic == pytest.approx(b.t_statistic)
    assert a.slope_nm_per_time == pytest.approx(1000.0 * b.slope_nm_per_time)


def test_nan_and_exploded_frames_are_flagged():
    xyz = _stationary(4)[:6].copy()
    xyz[3, 5, 1] = np.nan
    xyz[4, 7, 0] = 1e4  # far beyond 10 box lengths
    traj = _traj(xyz)
    check = check_coordinates(traj)
    assert not check.ok
    assert check.nonfinite_frames == [3] and check.exploded_frames == [4] and check.first_bad_frame == 3
    rep = assess_stability(traj, n_blocks=2)
    assert not rep.stable
    assert rep.block_frames[-1][1] == 3  # structure only from the frames before the first broken one
    assert check_coordinates(_traj(_stationary(5)[:3])).ok
