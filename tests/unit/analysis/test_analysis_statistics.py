"""The decision rules (openmm_cgkd.analysis.statistics) against known answers: scipy's own tests,
R's p.adjust values, textbook formulas, and simulated data with a known effect."""
import math

import numpy as np
import pytest
from scipy import stats

from openmm_cgkd.analysis.distributions import AnalysisError
from openmm_cgkd.analysis.statistics import (StatisticsConfig, decide, detectable_difference, holm, paired_test,
                                             tost_ratio, welch_test)
from openmm_cgkd.config import ConfigError

A = [0.101, 0.097, 0.108, 0.094]
B = [0.125, 0.118, 0.131, 0.140]


def test_welch_and_paired_match_scipy():
    w = welch_test(A, B)
    ref = stats.ttest_ind(A, B, equal_var=False)
    assert w.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert w.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert w.df == pytest.approx(ref.df, rel=1e-12)
    p = paired_test(A, B)
    ref = stats.ttest_rel(A, B)
    assert p.statistic == pytest.approx(ref.statistic, rel=1e-12) and p.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert p.df == 3 and w.difference == pytest.approx(np.mean(A) - np.mean(B))


def test_welch_df_by_hand():
    # Welch-Satterthwaite: (qa + qb)^2 / (qa^2/(na-1) + qb^2/(nb-1)), q = s^2/n
    a, b = [1.0, 2.0, 4.0], [3.0, 3.5, 5.0, 9.0, 7.0]
    qa, qb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 5
    assert welch_test(a, b).df == pytest.approx((qa + qb) ** 2 / (qa ** 2 / 2 + qb ** 2 / 4))


def test_tests_need_two_values_and_equal_pairs():
    with pytest.raises(AnalysisError, match="at least 2"):
        welch_test([0.1], B)
    with pytest.raises(AnalysisError, match="as many values"):
        paired_test(A, B[:3])


def test_zero_spread():
    assert welch_test([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    assert welch_test([1.0, 1.0], [2.0, 2.0]).p_value == 0.0


def test_holm_matches_r_p_adjust():
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") -> 0.03 0.06 0.06 0.02
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1, NaN left out of m: p.adjust(c(0.5, 0.4), "holm") -> 0.8 0.8
    out = holm([0.5, np.nan, 0.4])
    assert out[0] == pytest.approx(0.8) and out[2] == pytest.approx(0.8) and np.isnan(out[1])
    assert holm([0.9, 0.8, 0.7]).max() == 1.0


def test_tost_equals_one_sided_welch_on_scaled_reference():
    # H0 mu_a <= theta mu_b is Welch's one-sided test of a against theta*b (var(theta b) = theta^2 var b)
    a, b = [0.100, 0.104, 0.097, 0.103], [0.096, 0.099, 0.094, 0.097]
    e = tost_ratio(a, b, 0.15)
    lo = stats.ttest_ind(a, 0.85 * np.array(b), equal_var=False, alternative="greater").pvalue
    hi = stats.ttest_ind(a, 1.15 * np.array(b), equal_var=False, alternative="less").pvalue
    assert e.p_lower == pytest.approx(lo, rel=1e-10) and e.p_upper == pytest.approx(hi, rel=1e-10)
    assert e.p_value == max(lo, hi) and e.ratio == pytest.approx(np.mean(a) / np.mean(b))
    ep = tost_ratio(a, b, 0.15, paired=True)
    hi_p = stats.ttest_rel(a, 1.15 * np.array(b), alternative="less").pvalue
    assert ep.p_upper == pytest.approx(hi_p, rel=1e-10)


def test_tost_rejects_near_one_and_not_far():
    b = [0.100, 0.102, 0.098, 0.101]
    assert tost_ratio([0.101, 0.099, 0.100, 0.102], b).p_value < 0.01
    assert tost_ratio([0.125, 0.126, 0.124, 0.127], b).p_value > 0.5  # 25 % above


def test_detectable_difference_has_the_power_it_says():
    # textbook normal approximation: (z_{1-a/2} + z_{power}) * se for large df
    t = welch_test(np.arange(200.0), np.arange(200.0) + 0.5)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert detectable_difference(t) == pytest.approx(z * t.se, rel=0.01)
    # small n: simulate normal samples with the detectable difference between them: power 0.8
    rng = np.random.default_rng(1)
    n, sd = 4, 1.0
    base = welch_test(rng.normal(0, sd, n), rng.normal(0, sd, n))
    # the detectable difference at the true SD (se = sd sqrt(2/n), df = 6 for equal variances)
    from openmm_cgkd.analysis.statistics import TTest
    true = TTest("welch", n, n, 0.0, 0.0, sd * math.sqrt(2 / n), 2 * n - 2, 0.0, 1.0)
    d = detectable_difference(true)
    a = rng.normal(0, sd, (20000, n))
    b = rng.normal(d, sd, (20000, n))
    power = np.mean(stats.ttest_ind(a, b, axis=1).pvalue < 0.05)  # pooled t: df 2n-2 exactly
    assert power == pytest.approx(0.8, abs=0.015)
    assert base.se > 0


def test_false_positive_rates_welch_holm_and_the_old_rule():
    """No true difference, 4 replicas a side: Welch rejects ~5 % of single decisions and Holm
    keeps the family-wise rate of 14 decisions under 5 %; the old 2-SE rule does not."""
    rng = np.random.default_rng(7)
    n_sim, m, n = 3000, 14, 4
    a = rng.normal(1.0, 0.1, (n_sim, m, n))
    b = rng.normal(1.0, 0.1, (n_sim, m, n))
    p = stats.ttest_ind(a, b, axis=2, equal_var=False).pvalue
    assert np.mean(p < 0.05) == pytest.approx(0.05, abs=0.01)
    fwer = np.mean([np.any(holm(row) <= 0.05) for row in p[:1000]])
    assert fwer <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 1000)
    se = np.hypot(a.std(axis=2, ddof=1), b.std(axis=2, ddof=1)) / math.sqrt(n)
    old = np.abs(a.mean(axis=2) - b.mean(axis=2)) > 2 * se
    assert np.mean(old) > 0.08  # the 2-SE rule at 6 degrees of freedom: ~9 %


def test_tost_false_equivalence_rate_at_the_margin():
    """True ratio exactly at the margin (1.15): TOST declares equivalence at most ~alpha."""
    rng = np.random.default_rng(3)
    hits = 0
    n_sim = 2000
    for _ in range(n_sim):
        b = rng.normal(0.1, 0.01, 6)
        a = rng.normal(0.115, 0.01, 6)
        hits += tost_ratio(a, b, 0.15).p_value <= 0.05
    assert hits / n_sim <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / n_sim)


def test_decide_verdicts():
    questions = [("clear", [0.10, 0.101, 0.099, 0.100], [0.20, 0.201, 0.199, 0.202], False, False),
                 ("same", [0.100, 0.101, 0.099, 0.100], [0.100, 0.102, 0.098, 0.101], False, True),
                 ("noisy", [0.10, 0.20, 0.05, 0.25], [0.16, 0.12, 0.22, 0.14], False, True),
                 ("one replica", [0.1], [0.2, 0.3], False, False)]
    d = decide(questions)
    assert d[0].verdict.startswith("lower (Holm-adjusted p = ") and d[0].outcome == "lower"
    assert d[1].verdict.startswith("equivalent within 15 % (TOST p = ") and d[1].outcome == "equivalent"
    assert d[2].verdict.startswith("not resolved (detectable difference >= ") and d[2].outcome == "not resolved"
    assert d[2].detectable == pytest.approx(detectable_difference(welch_test(*questions[2][1:3])))
    assert d[3].verdict.startswith("n/a") and d[3].test is None
    # Holm over the three tests that ran: the smallest p times 3
    assert d[0].p_holm == pytest.approx(min(1.0, 3 * d[0].test.p_value))
    swapped = decide([("clear", questions[0][2], questions[0][1], False, False)])[0]
    assert swapped.outcome == "higher"


def test_statistics_config():
    assert StatisticsConfig.from_dict({"equivalence_margin": 0.1}).equivalence_margin == 0.1
    with pytest.raises(ConfigError):
        StatisticsConfig.from_dict({"equivalence_margin": 1.5})
    with pytest.raises(ConfigError):
        StatisticsConfig.from_dict({"alpha_": 0.05})


def test_power_integral_matches_scipy_nct():
    from openmm_cgkd.analysis.statistics import _power
    for df, nc in ((3.0, 2.0), (6.0, 3.1), (20.0, 1.0)):
        crit = stats.t.ppf(0.975, df)
        ref = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
        assert _power(nc, df, crit) == pytest.approx(ref, abs=2e-4)
