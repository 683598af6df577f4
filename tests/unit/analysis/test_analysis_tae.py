"""TAE and replica statistics."""
import numpy as np
import pytest

from openmm_cgkd.analysis import (AnalysisError, Distribution, distribution_tae, replica_mean, replica_stat,
                                  replica_tae_stats, tae, tae_table)

EDGES = np.linspace(0.0, 2.0, 41)
DX = 0.05


def _density(kind, values, key="X"):
    values = np.asarray(values, dtype=float)
    return Distribution(kind, key, EDGES, values / (values.sum() * DX))


def test_identical_distributions_give_zero():
    rng = np.random.default_rng(0)
    p = _density("cdf", rng.random(40))
    assert tae(p.values, p.values, DX) == 0.0
    assert distribution_tae(p, _density("cdf", p.values.copy())) == pytest.approx(0.0, abs=1e-15)


def test_disjoint_normalised_distributions_give_two():
    left = np.r_[np.ones(20), np.zeros(20)]
    p, q = _density("adf", left), _density("adf", left[::-1])
    assert distribution_tae(p, q) == pytest.approx(2.0)
    assert distribution_tae(q, p) == pytest.approx(2.0)
    # Partial overlap lies strictly between.
    r = _density("adf", np.r_[np.zeros(10), np.ones(20), np.zeros(10)])
    assert 0.0 < distribution_tae(p, r) < 2.0
    assert distribution_tae(p, r) == pytest.approx(1.0)


def test_rdf_modes():
    g1 = Distribution("rdf", "A-B", EDGES, np.ones(40))
    g2 = Distribution("rdf", "A-B", EDGES, 2 * np.ones(40))
    # "g": the TAE of g(r) itself, |1 - 2| over 2 nm.
    assert distribution_tae(g1, g2) == pytest.approx(2.0)
    # "density": unit-area curves; proportional RDFs are then identical.
    assert distribution_tae(g1, g2, rdf_mode="density") == pytest.approx(0.0)
    assert distribution_tae(g1, g1) == 0.0
    with pytest.raises(AnalysisError, match="rdf_mode"):
        distribution_tae(g1, g2, rdf_mode="bogus")


def test_mismatched_inputs_are_refused():
    p = _density("cdf", np.ones(40))
    with pytest.raises(AnalysisError, match="different grids"):
        distribution_tae(p, Distribution("cdf", "X", np.linspace(0, 1, 41), np.ones(40)))
    with pytest.raises(AnalysisError, match="adf"):
        distribution_tae(p, _density("adf", np.ones(40)))
    with pytest.raises(AnalysisError, match="lacks curves"):
        tae_table({"X": p}, {"X": p, "Y": p})
    assert tae_table({"X": p, "Z": p}, {"X": p}) == {"X": 0.0}


def test_replica_mean_and_std():
    reps = [{"X": _density("cdf", np.r_[np.ones(20), np.zeros(20)] + k)} for k in range(3)]
    mean = replica_mean(reps)["X"]
    stack = np.stack([r["X"].values for r in reps])
    np.testing.assert_allclose(mean.values, stack.mean(axis=0))
    np.testing.assert_allclose(mean.std, stack.std(axis=0, ddof=1))
    assert mean.meta["n_replicas"] == 3
    single = replica_mean(reps[:1])["X"]
    assert np.all(single.std == 0)
    s = replica_stat([1.0, 2.0, 3.0])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)
    stats = replica_tae_stats([{"X": 0.1, "Y": 1.0}, {"X": 0.3, "Y": 1.0}])
    assert stats["X"].mean == pytest.approx(0.2) and stats["Y"].std == 0.0
    with pytest.raises(AnalysisError):
        replica_mean([{"X": reps[0]["X"]}, {"Y": reps[0]["X"]}])
