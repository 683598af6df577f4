"""Drift from t = 0 (openmm_cgkd.analysis.drift) against independent calculations: scipy's
linregress, direct neighbour counts, the MST of one frame, an analytic g(r)."""
import numpy as np
import pytest
from scipy import stats

from openmm_cgkd.analysis.cdf import mst_merge_distances
from openmm_cgkd.analysis.distributions import AnalysisError, Distribution, make_trajectory, pairwise_distances
from openmm_cgkd.analysis.drift import (DriftSeries, common_discard, coordination_series, first_minimum, model_drift,
                                        linear_trend, merge_distance_series, over_replicas, relative_change,
                                        replica_drift_series)

L = 2.0
BOX = np.diag([L, L, L])


def test_linear_trend_matches_linregress():
    rng = np.random.default_rng(0)
    t = np.arange(50.0)
    v = 3.0 - 0.2 * t + rng.normal(0, 1, 50)
    ref = stats.linregress(t, v)
    slope, se = linear_trend(t, v)
    assert slope == pytest.approx(ref.slope) and se == pytest.approx(ref.stderr)
    with pytest.raises(AnalysisError):
        linear_trend([0, 1], [1, 2])


def test_relative_change_and_replica_mean():
    assert relative_change([2.0, 2.1, 2.2, 2.3], slice(2, None)) == pytest.approx(0.125)
    m = over_replicas([0.1, 0.2, 0.3])
    assert m.mean == pytest.approx(0.2) and m.se == pytest.approx(0.1 / np.sqrt(3)) and m.n == 3


def test_first_minimum_of_an_analytic_rdf():
    edges = np.linspace(0, 1.5, 301)
    r = 0.5 * (edges[1:] + edges[:-1])
    g = np.where(r < 0.3, 0.0, 1.0 + 1.5 * np.exp(-((r - 0.45) / 0.05) ** 2) - 0.5 * np.exp(-((r - 0.65) / 0.05) ** 2))
    assert first_minimum(Distribution("rdf", "A-B", edges, g)) == pytest.approx(0.65, abs=0.006)


def _traj(seed=1, frames=3):
    rng = np.random.default_rng(seed)
    names = ["CHO"] * 12 + ["CL"] * 12
    return make_trajectory(rng.uniform(0, L, (frames, 24, 3)), names, BOX, times=np.arange(frames, dtype=float)), names


def test_coordination_and_merge_series_against_direct_counts():
    traj, _ = _traj()
    out = coordination_series(traj, {"CHO-CL": 0.6, "CL-CL": 0.6})
    xyz = traj.xyz.astype(np.float64)
    for f in range(traj.n_frames):
        d = pairwise_distances(xyz[f, :12], xyz[f, 12:], BOX)
        assert out["CHO-CL"][f] == pytest.approx(np.count_nonzero(d < 0.6) / 12)
        d = pairwise_distances(xyz[f, 12:], xyz[f, 12:], BOX)
        assert out["CL-CL"][f] == pytest.approx((np.count_nonzero(d < 0.6) - 12) / 12)
    merge = merge_distance_series(traj)
    assert merge["CL"][1] == pytest.approx(mst_merge_distances(xyz[1, 12:], BOX).mean(), rel=1e-6)


def test_drift_series_round_trip_and_drifts():
    traj, _ = _traj(frames=6)
    edges = np.linspace(0, 1.0, 201)
    r = 0.5 * (edges[1:] + edges[:-1])
    g = 1.0 + np.exp(-((r - 0.4) / 0.05) ** 2) - 0.5 * np.exp(-((r - 0.6) / 0.05) ** 2)
    refs = {"CHO-CL": Distribution("rdf", "CHO-CL", edges, g)}
    s = replica_drift_series(traj, refs, energy=np.linspace(-100, -110, 6))
    assert s.cutoffs_nm["CHO-CL"] == pytest.approx(0.6, abs=0.006)
    back = DriftSeries.from_dict(s.to_dict())
    assert np.allclose(back.merge_nm["CHO"], s.merge_nm["CHO"]) and back.cutoffs_nm == s.cutoffs_nm
    d = s.drifts(slice(3, None))
    assert d["energy"] == pytest.approx(np.mean(np.linspace(-100, -110, 6)[3:]) + 100)
    assert d["merge:CL"] == pytest.approx(relative_change(s.merge_nm["CL"], slice(3, None)))


def test_common_discard():
    assert common_discard([136, None, 238, 90]) == 238
    with pytest.raises(AnalysisError):
        common_discard([None])


def test_model_drift_over_replicas():
    t = np.arange(10.0)
    series = [DriftSeries(t, {"CL": 1.0 + 0.01 * k * t}, {}, {}, -100.0 - 2.0 * t) for k in (1, 2, 3)]
    out = model_drift(series, start=5)
    # change of CL from frame 0 to the mean over frames 5-9 (t = 7 on average): 0.07 k
    assert out["merge:CL"]["change"]["mean"] == pytest.approx(0.14)
    assert out["merge:CL"]["change"]["se"] == pytest.approx(0.07 / np.sqrt(3))
    assert out["merge:CL"]["slope"]["mean"] == pytest.approx(0.02)  # fraction of frame 0 per ps
    assert out["energy"]["change"]["mean"] == pytest.approx(-14.0) and out["energy"]["slope"]["mean"] == pytest.approx(-2.0)
    assert model_drift([], 5) == {}
