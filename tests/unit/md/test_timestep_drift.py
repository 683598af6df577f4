"""The time step check's NVE drift and its standard error (openmm_cgkd.md.timestep_check): a few
beads' total energy fluctuates too much for a short run to resolve a small drift limit, so the
verdict allows 2 standard errors, computed for correlated residuals (checked by coverage)."""
import numpy as np
import pytest
from scipy import stats

from openmm_cgkd.md.timestep_check import TimestepCheck, linear_drift


def _ar1(rng, n, phi, sigma):
    x = np.empty(n)
    x[0] = rng.normal(0, sigma / np.sqrt(1 - phi ** 2))
    for i in range(1, n):
        x[i] = phi * x[i - 1] + rng.normal(0, sigma)
    return x


def test_white_noise_gives_the_least_squares_standard_error():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 200, 801)
    e = 0.3 * t + rng.normal(0, 2.0, t.size)
    assert linear_drift(t, e)[2] == pytest.approx(stats.linregress(t, e).stderr, rel=0.25)


def test_correlated_residuals_keep_their_coverage():
    """AR(1) residuals (correlation time ~10 samples): the ordinary standard error covers the true
    slope far less often than 2 SE should; the inflated one about as often as it should."""
    rng = np.random.default_rng(1)
    t = np.arange(400, dtype=float)
    hits, naive = 0, 0
    trials = 300
    for _ in range(trials):
        e = 0.01 * t + _ar1(rng, t.size, 0.9, 1.0)
        est = np.polyfit(t, e, 1)[0]
        hits += abs(est - 0.01) <= 2 * linear_drift(t, e)[2]
        naive += abs(est - 0.01) <= 2 * stats.linregress(t, e).stderr
    assert hits / trials >= 0.85 and naive / trials <= 0.6, (hits / trials, naive / trials)


def test_the_verdict_allows_two_standard_errors_of_drift():
    base = dict(timestep_fs=1.0, n_beads=6, target_temperature_K=300.0, nvt_ps=0.0, nve_ps=200.0, blew_up=None)
    within = TimestepCheck(**base, nve_drift_kT_per_ns_per_bead=-0.08, nve_drift_se_kT_per_ns_per_bead=0.02)
    beyond = TimestepCheck(**base, nve_drift_kT_per_ns_per_bead=0.20, nve_drift_se_kT_per_ns_per_bead=0.02)
    assert within.safe and not beyond.safe
    assert "-0.08 +- 0.02 kT/ns" in within.summary() and within.to_dict()["drift_ok"] is True
    # a result made before the error was recorded: the drift alone decides
    old = TimestepCheck(**base, nve_drift_kT_per_ns_per_bead=0.06)
    assert not old.safe
