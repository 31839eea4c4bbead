"""The statistics of the verdicts, as pure functions of numbers (scipy.stats underneath).

Every test returns p-values normalised so that each is rejected at ``ALPHA`` (0.05), which is
what Holm's step-down procedure within a finding needs:

- direction: ``p_for`` = 2 x the one-sided p in the claimed direction (the 95% two-sided CI
  excludes 0 on the claimed side exactly when it is < 0.05), ``p_against`` likewise for the
  other side;
- equivalence (TOST): ``p_for`` = the larger of the two one-sided p-values against -margin and
  +margin (the 90% CI lies inside +-margin exactly when it is < 0.05); ``p_against`` = the
  one-sided p that the difference lies beyond the margin on the side of its estimate (the 90% CI
  lies entirely outside exactly when it is < 0.05);
- "matters": ``p_for`` = the one-way ANOVA F-test p over the levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
MIN_SEEDS = 3

REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = (
    "reproduced", "contradicted", "inconclusive", "not measured")


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with its t-interval at ``confidence``; ``sd`` is their spread."""

    mean: float
    low: float
    high: float
    sd: float
    n: int
    confidence: float

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n) if self.n else math.nan


@dataclass(frozen=True)
class Test:
    """A part's test: its interval, the normalised p-values, and whether the effect is as large
    as the declared smallest effect of interest (the size half of a 'reproduced')."""

    interval: Interval
    p_for: float
    p_against: float
    size_ok: bool
    name: str


def t_interval(values, confidence: float = 0.95) -> Interval:
    """The Student-t interval of the mean (n - 1 df); zero width when the values agree."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    if n < 2:
        return Interval(mean, math.nan, math.nan, sd, n, confidence)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, sd, n, confidence)


def one_sided_p(mean: float, se: float, df: int, above: float) -> float:
    """P-value of H0: mu <= ``above`` against mu > ``above`` (t with ``df``); exact when se = 0."""
    if se == 0 or not math.isfinite(se):
        return 0.0 if mean > above else 1.0
    return float(stats.t.sf((mean - above) / se, df))


def direction_test(d, expect: str, sesoi: float) -> Test:
    """Seed-paired differences ``d`` (other - reference) against a claimed direction."""
    ci = t_interval(d, 0.95)
    sign = -1.0 if expect == "lower" else 1.0
    p_claim = one_sided_p(sign * ci.mean, ci.se, ci.n - 1, 0.0)
    p_other = one_sided_p(-sign * ci.mean, ci.se, ci.n - 1, 0.0)
    return Test(ci, min(1.0, 2 * p_claim), min(1.0, 2 * p_other), sign * ci.mean >= sesoi,
                f"paired t, n = {ci.n}")


def tost(d, margin: float) -> Test:
    """Two one-sided tests of |mean(d)| < margin; the 90% interval goes with them."""
    ci = t_interval(d, 1 - 2 * ALPHA)
    df = ci.n - 1
    p_above_low = one_sided_p(ci.mean, ci.se, df, -margin)  # mu > -margin
    p_below_high = one_sided_p(-ci.mean, ci.se, df, -margin)  # mu < +margin
    side = 1.0 if ci.mean >= 0 else -1.0
    p_outside = one_sided_p(side * ci.mean, ci.se, df, margin)  # |mu| > margin on that side
    return Test(ci, max(p_above_low, p_below_high), p_outside, abs(ci.mean) < margin,
                f"TOST, n = {ci.n}")


def anova_p(groups: list) -> float:
    """One-way ANOVA F-test p over the groups (replicates = seeds); 1.0 when undefined."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if len(groups) < 2 or sum(len(g) for g in groups) <= len(groups):
        return 1.0
    within = sum(((g - g.mean()) ** 2).sum() for g in groups)
    if within == 0:
        means = [g.mean() for g in groups]
        return 0.0 if max(means) > min(means) else 1.0
    return float(stats.f_oneway(*groups).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def median_ratio(reference, other, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """median(other) / median(reference) with a percentile bootstrap interval (resampling each
    arm's repeats independently)."""
    reference = np.asarray(reference, dtype=float)
    other = np.asarray(other, dtype=float)
    ratio = float(np.median(other) / np.median(reference))
    if np.ptp(reference) == 0 and np.ptp(other) == 0:
        return ratio, ratio, ratio

    def statistic(ref, oth, axis=-1):
        return np.median(oth, axis=axis) / np.median(ref, axis=axis)

    result = stats.bootstrap((reference, other), statistic, confidence_level=confidence,
                             n_resamples=2000, method="percentile", vectorized=True,
                             rng=np.random.default_rng(seed))
    return ratio, float(result.confidence_interval.low), float(result.confidence_interval.high)


def sigma_interval(residuals_ss: float, df: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """A pooled standard deviation and its chi-square interval from the sum of squared
    deviations within configurations and its degrees of freedom."""
    if df < 1:
        return math.nan, math.nan, math.nan
    sigma = math.sqrt(residuals_ss / df)
    low = math.sqrt(residuals_ss / stats.chi2.ppf(0.5 + confidence / 2, df))
    high = math.sqrt(residuals_ss / stats.chi2.ppf(0.5 - confidence / 2, df))
    return sigma, low, high


def decide(test: Test, p_for: float, p_against: float) -> tuple[str, float, float]:
    """Verdict of a tested part from its (Holm-adjusted) p-values: reproduced when the claim's
    test rejects and the effect is at least the declared size; contradicted when the opposite
    test rejects; inconclusive otherwise."""
    if p_for <= ALPHA and test.size_ok:
        return REPRODUCED, p_for, p_against
    if p_against <= ALPHA:
        return CONTRADICTED, p_for, p_against
    return INCONCLUSIVE, p_for, p_against


def underpowered(n: int, what: str = "seeds") -> str:
    """The verdict for fewer than ``MIN_SEEDS`` replicates."""
    return f"{INCONCLUSIVE} (underpowered: {n} {what})"


# --- best learning rate (F13) --------------------------------------------------------------------

LOW_EDGE, HIGH_EDGE, REFINED, GRID_POINT = "low edge", "high edge", "refined", "grid point"


def curve_optimum(x, y) -> tuple[float, str]:
    """The minimiser of a curve sampled at ascending ``x`` (log10 lr) with values ``y`` (+inf for a
    level that diverged) and how it was found: ``refined`` (the vertex of the parabola through
    the lowest point and its two neighbours), ``grid point`` (a neighbour diverged, or the three
    points are collinear), ``low edge`` / ``high edge`` (the lowest point is the grid's first or
    last: the true optimum may lie beyond it). NaN when no point is finite."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    finite = np.isfinite(y)
    if not finite.any():
        return math.nan, "none"
    j = int(np.argmin(np.where(finite, y, np.inf)))
    if j == 0:
        return float(x[0]), LOW_EDGE
    if j == len(x) - 1:
        return float(x[-1]), HIGH_EDGE
    (x0, x1, x2), (y0, y1, y2) = x[j - 1:j + 2], y[j - 1:j + 2]
    if not (math.isfinite(y0) and math.isfinite(y2)):
        return float(x1), GRID_POINT
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 ** 2 * (y0 - y1) + x1 ** 2 * (y2 - y0) + x0 ** 2 * (y1 - y2)) / denom
    if a <= 0:
        return float(x1), GRID_POINT
    return float(-b / (2 * a)), REFINED


def censored_optimum(x, y) -> float:
    """:func:`curve_optimum` for a bootstrap resample: an edge optimum becomes -inf / +inf (the
    true optimum lies somewhere beyond the edge), so an interval that reaches it is open there."""
    value, how = curve_optimum(x, y)
    return -math.inf if how == LOW_EDGE else math.inf if how == HIGH_EDGE else value


def seed_bootstrap(n_seeds: int, statistic, n_resamples: int = 2000, confidence: float = 0.95,
                   seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``statistic(rows)`` over resamples of the seed rows 0..n-1 (with
    replacement; every arm of one resample uses the same rows). No interpolation (the lower
    bound is rounded down, the upper up), so infinite values give open bounds; any undefined
    (NaN) resample makes the interval (-inf, inf)."""
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rows) for rows in rng.integers(0, n_seeds, (n_resamples, n_seeds))])
    if np.isnan(values).any():
        return -math.inf, math.inf
    tail = (1 - confidence) / 2
    return (float(np.quantile(values, tail, method="lower")),
            float(np.quantile(values, 1 - tail, method="higher")))


def band_decision(low: float, high: float, band_low: float, band_high: float) -> str:
    """Reproduced when [low, high] lies inside [band_low, band_high], contradicted when it lies
    entirely outside, inconclusive otherwise."""
    if band_low <= low and high <= band_high:
        return REPRODUCED
    if high < band_low or low > band_high:
        return CONTRADICTED
    return INCONCLUSIVE
