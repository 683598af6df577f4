"""Decisions between models that mean what they say (docs/evidence.md, "The statistical rules").

A model is scored by a few replicas, so every comparison of two models is a comparison of two
small samples of per-replica numbers (TAEs, drifts, ...). The rules:

* **Difference**: Welch's t-test (unequal variances, Welch-Satterthwaite degrees of freedom) on
  the two samples, or the paired t-test when the replicas of the two models share their starts
  and seeds (replica k of both from the same frame with the same seed: their differences cancel
  the start's own contribution). Two-sided p-values, Holm's step-down correction over the whole
  family of decisions a report makes (:func:`holm`).
* **Equivalence** ("matches"): two one-sided tests (TOST) that the ratio of the means
  mu_a / mu_b lies inside ``(1 - margin, 1 + margin)``, the margin declared before the runs.
  The hypotheses on the ratio are tested as linear ones, ``H0: mu_a - theta mu_b <= 0`` for
  ``theta = 1 - margin`` and ``>= 0`` for ``theta = 1 + margin``: the statistic is the t of
  ``mean_a - theta mean_b`` with its own standard error (``s_a^2/n_a + theta^2 s_b^2/n_b``,
  Welch-Satterthwaite df; paired: the one-sample t of ``a_i - theta b_i``). This is the
  Fieller-type ratio test of Hauschke, Kieser & Hothorn (1999): it carries the uncertainty of
  the reference's mean (a margin "15 % of the observed reference mean" treated as a constant
  would not), needs no log transform (a log-ratio test compares geometric means, and TAEs of
  4 replicas are not log-normal by any evidence) and is exact for normal data. The TOST p is
  the larger of the two one-sided p-values; Holm's correction runs over the family of
  equivalence decisions as well.
* **Not resolved**: every comparison that is neither gets the smallest difference of means
  the data could have detected (:func:`detectable_difference`: two-sided test at ``alpha``
  with ``power``, from the observed standard deviations and replica counts, by the noncentral
  t). It is a lower bound: Holm's correction only raises it.

Units: whatever the samples carry (TAEs are dimensionless or nm); p-values are probabilities.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from openmm_cgkd.analysis.distributions import AnalysisError
from openmm_cgkd.config import Config, ConfigError

__all__ = ["StatisticsConfig", "TTest", "Equivalence", "Decision", "welch_test", "paired_test", "t_test", "holm",
           "tost_ratio", "detectable_difference", "decide", "DEFAULT_ALPHA", "DEFAULT_MARGIN", "DEFAULT_POWER"]

DEFAULT_ALPHA = 0.05  # family-wise error rate of the decisions
DEFAULT_MARGIN = 0.15  # equivalence: the ratio of means inside (1 - margin, 1 + margin)
DEFAULT_POWER = 0.8  # power at which a "not resolved" reports the detectable difference


@dataclass(frozen=True)
class StatisticsConfig(Config):
    """The decision rules of a report, declared before the runs (YAML ``statistics:``):
    ``alpha`` the family-wise error rate (Holm), ``equivalence_margin`` the relative margin of
    "matches" (0.15: the ratio of mean TAEs inside 0.85-1.15), ``power`` at which a "not
    resolved" states the detectable difference."""

    alpha: float = DEFAULT_ALPHA
    equivalence_margin: float = DEFAULT_MARGIN
    power: float = DEFAULT_POWER

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 0.5:
            raise ConfigError(f"statistics.alpha must be in (0, 0.5), got {self.alpha}")
        if not 0.0 < self.equivalence_margin < 1.0:
            raise ConfigError(f"statistics.equivalence_margin must be in (0, 1), got {self.equivalence_margin}")
        if not 0.5 <= self.power < 1.0:
            raise ConfigError(f"statistics.power must be in [0.5, 1), got {self.power}")


def _sample(x, name: str) -> np.ndarray:
    v = np.asarray(list(x), dtype=np.float64)
    if v.ndim != 1 or v.size < 2 or not np.all(np.isfinite(v)):
        raise AnalysisError(f"{name}: a test needs at least 2 finite values, got {v.tolist()}")
    return v


@dataclass(frozen=True)
class TTest:
    """A two-sample t-test of ``mean_a - mean_b``: ``test`` "welch" or "paired", the standard
    error ``se`` of the difference, degrees of freedom ``df``, ``statistic`` t and the
    two-sided ``p_value``."""

    test: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    se: float
    df: float
    statistic: float
    p_value: float

    @property
    def difference(self) -> float:
        return self.mean_a - self.mean_b

    def to_dict(self) -> dict:
        return {"test": self.test, "n_a": self.n_a, "n_b": self.n_b, "mean_a": self.mean_a, "mean_b": self.mean_b,
                "difference": self.difference, "se": self.se, "df": self.df, "statistic": self.statistic,
                "p_value": self.p_value}


def _t_p(diff: float, se: float, df: float) -> tuple[float, float]:
    """(t, two-sided p); a zero standard error gives p 1 for no difference, 0 for any."""
    from scipy import stats

    if se == 0.0:
        return (0.0, 1.0) if diff == 0.0 else (math.copysign(math.inf, diff), 0.0)
    t = diff / se
    return t, float(2.0 * stats.t.sf(abs(t), df))


def _welch_se_df(var_a: float, n_a: int, var_b: float, n_b: int) -> tuple[float, float]:
    """Standard error of the difference of means and Welch-Satterthwaite degrees of freedom."""
    qa, qb = var_a / n_a, var_b / n_b
    se2 = qa + qb
    if se2 == 0.0:
        return 0.0, float(n_a + n_b - 2)
    return math.sqrt(se2), se2 ** 2 / (qa ** 2 / (n_a - 1) + qb ** 2 / (n_b - 1))


def welch_test(a: Sequence[float], b: Sequence[float]) -> TTest:
    """Welch's two-sample t-test of the means of ``a`` (n_a,) and ``b`` (n_b,), each n >= 2."""
    a, b = _sample(a, "a"), _sample(b, "b")
    se, df = _welch_se_df(float(a.var(ddof=1)), a.size, float(b.var(ddof=1)), b.size)
    t, p = _t_p(float(a.mean() - b.mean()), se, df)
    return TTest("welch", a.size, b.size, float(a.mean()), float(b.mean()), se, df, t, p)


def paired_test(a: Sequence[float], b: Sequence[float]) -> TTest:
    """Paired t-test of ``a`` against ``b`` (both (n,), n >= 2, element k of both from the same
    start and seed)."""
    a, b = _sample(a, "a"), _sample(b, "b")
    if a.size != b.size:
        raise AnalysisError(f"a paired test needs as many values on both sides, got {a.size} and {b.size}")
    d = a - b
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    t, p = _t_p(float(d.mean()), se, d.size - 1)
    return TTest("paired", a.size, b.size, float(a.mean()), float(b.mean()), se, float(d.size - 1), t, p)


def t_test(a: Sequence[float], b: Sequence[float], paired: bool = False) -> TTest:
    """:func:`paired_test` when ``paired``, else :func:`welch_test`."""
    return paired_test(a, b) if paired else welch_test(a, b)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (m,) of ``p_values`` (m,), in their order: sorted
    ascending, p_(i) times (m - i + 1), made monotone, capped at 1. Reject where adjusted
    p <= alpha: the family-wise error rate is at most alpha. NaN entries (no test) stay NaN
    and do not count in m."""
    p = np.asarray(list(p_values), dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.nonzero(np.isfinite(p))[0]
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adj
    return out


@dataclass(frozen=True)
class Equivalence:
    """TOST of ``ratio`` = mean_a / mean_b inside ``(1 - margin, 1 + margin)``: the one-sided
    p-values against the lower and upper bound and ``p_value``, the larger of them."""

    test: str
    margin: float
    ratio: float
    p_lower: float
    p_upper: float

    @property
    def p_value(self) -> float:
        return max(self.p_lower, self.p_upper)

    def to_dict(self) -> dict:
        return {"test": self.test, "margin": self.margin, "ratio": self.ratio, "p_lower": self.p_lower,
                "p_upper": self.p_upper, "p_value": self.p_value}


def _one_sided(a: np.ndarray, b: np.ndarray, theta: float, paired: bool, greater: bool) -> float:
    """p of H1: mu_a - theta mu_b > 0 (``greater``) or < 0, as a linear hypothesis."""
    from scipy import stats

    if paired:
        d = a - theta * b
        diff, se, df = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(d.size), float(d.size - 1)
    else:
        diff = float(a.mean() - theta * b.mean())
        se, df = _welch_se_df(float(a.var(ddof=1)), a.size, theta ** 2 * float(b.var(ddof=1)), b.size)
    if se == 0.0:
        return 0.0 if (diff > 0.0) == greater and diff != 0.0 else 1.0
    t = diff / se
    return float(stats.t.sf(t, df) if greater else stats.t.cdf(t, df))


def tost_ratio(a: Sequence[float], b: Sequence[float], margin: float = DEFAULT_MARGIN,
               paired: bool = False) -> Equivalence:
    """Two one-sided tests that mean(a) / mean(b) lies in ``(1 - margin, 1 + margin)`` (module
    docstring: Fieller-type linear hypotheses, Welch or paired). ``b`` is the reference side
    (its mean must be positive)."""
    a, b = _sample(a, "a"), _sample(b, "b")
    if not 0.0 < margin < 1.0:
        raise AnalysisError(f"equivalence margin must be in (0, 1), got {margin}")
    if paired and a.size != b.size:
        raise AnalysisError(f"a paired test needs as many values on both sides, got {a.size} and {b.size}")
    if b.mean() <= 0.0:
        raise AnalysisError(f"a ratio test needs a positive reference mean, got {b.mean():g}")
    lo = _one_sided(a, b, 1.0 - margin, paired, greater=True)
    hi = _one_sided(a, b, 1.0 + margin, paired, greater=False)
    return Equivalence("paired" if paired else "welch", float(margin), float(a.mean() / b.mean()), lo, hi)


def _power(nc: float, df: float, crit: float, n_grid: int = 4096) -> float:
    """P(|T| > crit) for T noncentral t (``df``, noncentrality ``nc``): T = (Z + nc) / sqrt(V / df),
    V chi-square(df), averaged over ``n_grid`` midpoint quantiles of V (scipy's ``nct`` returns
    NaN at some small non-integer df; this agrees with it to ~1e-4 where it works)."""
    from scipy import special, stats

    v = stats.chi2.ppf((np.arange(n_grid) + 0.5) / n_grid, df)
    c = crit * np.sqrt(v / df)
    return float(np.mean(special.ndtr(nc - c) + special.ndtr(-c - nc)))


def detectable_difference(test: TTest, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER) -> float:
    """The smallest ``|mean_a - mean_b|`` that a two-sided test at ``alpha`` with the standard error
    and degrees of freedom of ``test`` (the observed SDs and n) rejects with probability
    ``power``: solves ``P(|T| > t_crit) = power`` for T noncentral t with noncentrality
    delta / se. Same units as the samples; 0 when the standard error is 0."""
    from scipy import optimize, stats

    if test.se == 0.0:
        return 0.0
    df = test.df
    crit = float(stats.t.ppf(1.0 - alpha / 2.0, df))
    hi = crit + float(stats.norm.ppf(power)) + 1.0
    while _power(hi, df, crit) < power:
        hi *= 2.0
    return float(optimize.brentq(lambda nc: _power(nc, df, crit) - power, 0.0, hi, xtol=1e-8) * test.se)


@dataclass(frozen=True)
class Decision:
    """One comparison of a report's family: model ``a`` against ``b`` in one quantity, its
    t-test, Holm-adjusted p, and (when ``equivalence`` was asked) its TOST with the adjusted p;
    ``detectable`` the smallest detectable difference; ``verdict`` in words."""

    label: str
    test: TTest | None
    p_holm: float
    equivalence: Equivalence | None
    p_tost_holm: float
    detectable: float
    verdict: str

    @property
    def outcome(self) -> str:
        """"lower" / "higher" (a vs b, significant), "equivalent", "not resolved" or "n/a"."""
        return self.verdict.split(" (")[0].split(" within")[0]

    def to_dict(self) -> dict:
        return {"label": self.label, "test": None if self.test is None else self.test.to_dict(),
                "p_holm": self.p_holm, "equivalence": None if self.equivalence is None else self.equivalence.to_dict(),
                "p_tost_holm": self.p_tost_holm, "detectable": self.detectable, "verdict": self.verdict}


def _fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def decide(questions: Sequence[tuple[str, Sequence[float] | None, Sequence[float] | None, bool, bool]],
           rules: StatisticsConfig | None = None) -> list[Decision]:
    """The verdicts of a family of comparisons, by the rules of the module docstring.

    ``questions``: per comparison ``(label, a, b, paired, equivalence)``: the per-replica values
    of model ``a`` and of ``b`` (None or fewer than 2 values: "n/a (fewer than 2 replicas)"),
    whether they are paired, whether "equivalent" is a verdict asked for (TOST on the ratio
    mean_a / mean_b). Holm runs over all t-tests, and separately over all TOSTs, of the family.
    Verdicts: "lower (Holm-adjusted p = ...)" / "higher (...)", "equivalent within 15 % (TOST
    p = ...)", or "not resolved (detectable difference >= X)"."""
    rules = rules or StatisticsConfig()
    tests, eqs = [], []
    for label, a, b, paired, equivalence in questions:
        if a is None or b is None or len(a) < 2 or len(b) < 2:
            tests.append(None)
            eqs.append(None)
            continue
        tests.append(t_test(a, b, paired))
        eqs.append(tost_ratio(a, b, rules.equivalence_margin, paired) if equivalence and np.mean(b) > 0 else None)
    p_holm = holm([np.nan if t is None else t.p_value for t in tests])
    p_tost = holm([np.nan if e is None else e.p_value for e in eqs])
    out = []
    for (label, *_), t, ph, e, pe in zip(questions, tests, p_holm, eqs, p_tost):
        if t is None:
            out.append(Decision(label, None, math.nan, None, math.nan, math.nan, "n/a (fewer than 2 replicas)"))
            continue
        mdd = detectable_difference(t, rules.alpha, rules.power)
        if ph <= rules.alpha:
            verdict = f"{'lower' if t.difference < 0 else 'higher'} (Holm-adjusted p = {_fmt_p(ph)})"
        elif e is not None and pe <= rules.alpha:
            verdict = f"equivalent within {100 * rules.equivalence_margin:g} % (TOST p = {_fmt_p(pe)})"
        else:
            rel = f", {100 * mdd / abs(t.mean_b):.0f} % of the second mean" if t.mean_b != 0 else ""
            verdict = f"not resolved (detectable difference >= {mdd:.3g}{rel})"
        out.append(Decision(label, t, float(ph), e, float(pe), mdd, verdict))
    return out
