"""Measuring the parts of claims on the records DataFrame: one function per part kind, each
returning :class:`PartResult` rows (a part with ``per`` gives one row per level).

A tested part leaves its verdict ``pending`` with a :class:`~.stats.Test`; :mod:`.verdicts`
applies Holm's adjustment within the finding and decides. Parts judged without a p-value
(memory differences, timing ratios, bounds, the estimate) are decided here.

The learning-rate optima (F13) are measured in :mod:`.lr_optimum`; the result row, the arms and
their seed-paired differences are in :mod:`.measured`.
"""

from __future__ import annotations

import pandas as pd

from . import stats
from .frame import (
    MEMORY_SOURCE,
    SEED,
    WHOLE_PROCESS,
    axes,
    base_of,
    column,
    level_sort_key,
    levels_of,
    ok_runs,
    select,
)
from .lr_optimum import LRCurve as LRCurve  # re-exported: tests reach the curves through effects
from .lr_optimum import flat_decision as flat_decision
from .lr_optimum import measure_lr_ratio, measure_lr_spread
from .lr_optimum import optimum_difference as optimum_difference
from .measured import (
    PENDING,
    PartResult,
    arm_rows,
    base_gain,
    describe,
    effect_sizes,
    fmt,
    higher_is_better,
    keyed,
    name,
    new_result,
    paired,
    pins_text,
    pooled_sigma,
    signed,
    tested,
    unit,
    withhold_at_edges,
)
from .parts import (
    ESTIMATE_GIB,
    TRAIN_SECONDS,
    BaseVsTuned,
    Bound,
    Contrast,
    Deterministic,
    EstimateFit,
    LRRatio,
    LRSpread,
    Matters,
    Part,
    Pins,
    SeedNoise,
    Sensitivity,
    TimeRatio,
)

# --- one function per part kind ---------------------------------------------------------------


def measure_contrast(runs, part: Contrast, sweep, seed_stds, within: Pins = ()) -> PartResult:
    result = new_result(part, sweep)
    pair = paired(runs, part, within)
    if isinstance(pair, str):
        result.rule = pair
        return result
    result.reference = describe(list(pair.reference.groupby(level=SEED).mean()))
    result.other = describe(list(pair.other.groupby(level=SEED).mean()))
    if part.reference_metric:
        result.reference += f" [{name(part.reference_metric)}]"
    result.pairs = [f"seed {s}: {signed(v)}" for s, v in pair.d.items()] + pair.notes
    tested(result, pair.d.values, part.expect, part.margin)
    withhold_at_edges(result, part, pair.edges)
    sigma = pooled_sigma(pair.reference, pair.other)
    source = ""
    if sigma is None and seed_stds.get(part.metric):
        sigma, source = seed_stds[part.metric], ", F1 seeds sweep"
    effect_sizes(result, float(pair.d.mean()), sigma,
                 base_gain(pair.reference_rows, part.reference_metric or part.metric), source)
    return result


def measure_per(runs, part: Contrast, sweep, seed_stds) -> list[PartResult]:
    """A Contrast split by the levels of ``part.per`` (one result per level)."""
    if part.per is None:
        return [measure_contrast(runs, part, sweep, seed_stds)]
    found = sorted(set(levels_of(ok_runs(runs, part.metric), part.per)) - {"-"}, key=level_sort_key)
    if not found:
        result = new_result(part, sweep)
        result.rule = f"no ok runs with {part.per}"
        return [result]
    out = []
    for value in found:
        result = measure_contrast(runs, part, sweep, seed_stds, ((part.per, value),))
        result.label = f"{part.label}, {part.per.split('.')[-1]}={value}"
        out.append(result)
    return out


def measure_deterministic(runs, part: Deterministic, sweep, seed_stds) -> list[PartResult]:
    """Memory: the difference of arm means, judged against the margin without a test."""
    result = new_result(part, sweep)
    ref, _ = arm_rows(runs, part.reference + part.within, part.metric)
    oth, _ = arm_rows(runs, part.other + part.within, part.metric)
    if ref.empty or oth.empty:
        result.rule = f"no ok runs with {name(part.metric)} at " + " or ".join(
            pins_text(p) for p, r in ((part.reference, ref), (part.other, oth)) if r.empty)
        return [result]
    r, o = column(ref, part.metric), column(oth, part.metric)
    delta, u = float(o.mean() - r.mean()), unit(part.metric)
    spread = max(float(r.max() - r.min()), float(o.max() - o.min()))
    result.reference = f"{fmt(r.mean(), 4)} {u} ({len(r)} run{'s' * (len(r) > 1)})"
    result.other = f"{fmt(o.mean(), 4)} {u} ({len(o)} run{'s' * (len(o) > 1)})"
    result.effect = f"{signed(delta)} {u} (x{fmt(o.mean() / r.mean(), 3)})"
    result.interval = (f"repeats spread {fmt(spread, 2)} {u}" if len(r) + len(o) > 2
                       else "single run per arm (allocator peaks repeat to MBs)")
    result.threshold = f"{'±' if part.expect == 'same' else ''}{fmt(part.margin, 3)} {u}"
    whole = WHOLE_PROCESS in set(ref[MEMORY_SOURCE]) | set(oth[MEMORY_SOURCE])
    beyond = abs(delta) > part.margin or (part.margin == 0 and delta != 0)
    if part.expect == "same":
        verdict = stats.CONTRADICTED if beyond else stats.REPRODUCED
    elif not beyond:
        verdict = stats.INCONCLUSIVE
    else:
        claimed = delta < 0 if part.expect == "lower" else delta > 0
        verdict = stats.REPRODUCED if claimed else stats.CONTRADICTED
    if part.margin and spread > part.margin / 2:
        verdict = stats.INCONCLUSIVE + " (repeats spread more than half the margin)"
    result.verdict = verdict
    result.rule = (f"{verdict}: deterministic rule (no test: allocator peaks repeat to MBs, so one "
                   f"run per arm suffices); Δ {signed(delta)} {u} against the margin "
                   f"{fmt(part.margin, 3)}; claimed {part.expect}"
                   + ("; memory is the whole-process peak (older record)" if whole else ""))
    return [result]


def measure_time(runs, part: TimeRatio, sweep, seed_stds) -> list[PartResult]:
    """Runtime: ratio of medians over repeats with a bootstrap CI (>= 3 repeats per arm)."""
    result = new_result(part, sweep)
    metric = part.metric if len(ok_runs(runs, part.metric)) else TRAIN_SECONDS
    ref, _ = arm_rows(runs, part.reference + part.within, metric)
    oth, _ = arm_rows(runs, part.other + part.within, metric)
    r, o = column(ref, metric).dropna(), column(oth, metric).dropna()
    if r.empty or o.empty:
        result.rule = f"no ok runs with {name(metric)} at both {pins_text(part.reference)} and {pins_text(part.other)}"
        return [result]
    result.metric = metric
    result.reference = f"median {fmt(r.median(), 4)} s ({len(r)} repeats)"
    result.other = f"median {fmt(o.median(), 4)} s ({len(o)} repeats)"
    result.threshold = f"ratio beyond 1 ± {part.margin:.0%}"
    n = min(len(r), len(o))
    ratio = float(o.median() / r.median())
    result.effect = f"x{fmt(ratio, 3)} ({ratio - 1:+.1%})"
    if n < stats.MIN_SEEDS:
        result.verdict = stats.underpowered(n, "repeats")
        result.rule = f"{result.verdict}: at least {stats.MIN_SEEDS} timing repeats per arm are needed"
        return [result]
    ratio, low, high = stats.median_ratio(r.values, o.values)
    result.interval = f"95% bootstrap CI x{fmt(low, 3)} to x{fmt(high, 3)}"
    if part.expect == "higher":
        reproduced, contradicted = low > 1 and ratio - 1 >= part.margin, high < 1
    else:
        reproduced, contradicted = high < 1 and 1 - ratio >= part.margin, low > 1
    verdict = (stats.REPRODUCED if reproduced else stats.CONTRADICTED if contradicted
               else stats.INCONCLUSIVE)
    result.verdict = verdict
    result.rule = (f"{verdict}: the 95% bootstrap CI of the median ratio against 1, and the ratio "
                   f"against 1 ± {part.margin:.0%} (not in the Holm family: no p-value); claimed {part.expect}")
    return [result]


def seed_table(rows: pd.DataFrame, axis: str, metric: str) -> pd.DataFrame:
    """``metric`` by seed (rows) and level of ``axis`` (columns), averaged over other axes."""
    frame = pd.DataFrame({"level": levels_of(rows, axis), SEED: rows[SEED],
                          "value": column(rows, metric)})
    table = frame.groupby([SEED, "level"])["value"].mean().unstack("level")
    return table[sorted(table.columns, key=level_sort_key)]


def measure_matters(runs, part: Matters, sweep, seed_stds) -> list[PartResult]:
    """One-way ANOVA over the levels (seeds as replicates) and the largest contrast vs SESOI."""
    result = new_result(part, sweep, "differs")
    rows = select(ok_runs(runs, part.metric), part.within)
    table = seed_table(rows, part.axis, part.metric) if not rows.empty else pd.DataFrame()
    short = part.axis.split(".")[-1]
    if table.shape[1] < 2:
        result.rule = f"fewer than 2 levels of {part.axis} with ok runs ({pins_text(part.within)})"
        return [result]
    means = table.mean()
    best = means.idxmax() if higher_is_better(part.metric) else means.idxmin()
    worst = means.idxmin() if higher_is_better(part.metric) else means.idxmax()
    contrast = abs(float(means[best] - means[worst]))
    result.reference = f"best {short}={best}: {fmt(means[best], 5)}"
    result.other = f"worst {short}={worst}: {fmt(means[worst], 5)}"
    result.effect = f"largest contrast {fmt(contrast, 3)} {unit(part.metric)}".rstrip()
    result.threshold = f"{fmt(part.margin, 3)} {unit(part.metric)} (smallest effect of interest)"
    result.pairs = [f"{short}={k}: {fmt(v, 5)} ({table[k].notna().sum()} seeds)" for k, v in means.items()]
    result.claim_text = f"claimed to matter: F-test, and the largest contrast at least {fmt(part.margin, 3)}"
    complete = table.dropna()
    n = len(complete)
    if n < stats.MIN_SEEDS:
        result.verdict = stats.underpowered(n)
        result.rule = f"{result.verdict}: at least {stats.MIN_SEEDS} seeds at every level are needed"
        return [result]
    p = stats.anova_p([complete[c].values for c in complete.columns])
    against = stats.tost(complete[worst].values - complete[best].values, part.margin)
    result.interval = (f"ANOVA over {complete.shape[1]} levels x {n} seeds: p = {p:.3g}; "
                       f"best - worst 90% CI {signed(against.interval.low)} to {signed(against.interval.high)}")
    result.test = stats.Test(against.interval, p, against.p_for, contrast >= part.margin,
                             f"one-way ANOVA, {n} seeds")
    result.verdict = PENDING
    effect_sizes(result, contrast, pooled_sigma(keyed(rows, axes(rows), part.metric)), None)
    return [result]


def measure_sensitivity(runs, part: Sensitivity, sweep, seed_stds) -> list[PartResult]:
    """Per seed, spread over ``over`` for the other arm minus the reference arm's."""
    result = new_result(part, sweep)
    spreads = {}
    for which in (part.reference, part.other):
        rows = select(ok_runs(runs, part.metric), ((part.axis, which),))
        table = seed_table(rows, part.over, part.metric).dropna() if not rows.empty else pd.DataFrame()
        if table.shape[1] < 2:
            result.rule = f"fewer than 2 levels of {part.over} with ok runs of {part.axis}={which}"
            return [result]
        spreads[which] = table.max(axis=1) - table.min(axis=1)
    joined = pd.concat(spreads, axis=1, join="inner")
    d = joined[part.other] - joined[part.reference]
    result.reference = f"{part.reference}: spread {describe(list(joined[part.reference]))}"
    result.other = f"{part.other}: spread {describe(list(joined[part.other]))}"
    result.pairs = [f"seed {s}: {signed(v)}" for s, v in d.items()]
    tested(result, d.values, part.expect, part.margin)
    return [result]


def measure_base_vs_tuned(runs, part: BaseVsTuned, sweep, seed_stds) -> list[PartResult]:
    """Each run's tuned score minus its own base score, averaged within seed."""
    result = new_result(part, sweep)
    rows, note = arm_rows(runs, part.within, part.metric, part.best_of)
    base = column(rows, base_of(part.metric))
    rows = rows[base.notna()]
    if rows.empty:
        result.rule = f"no ok runs with both {part.metric} and {base_of(part.metric)} ({pins_text(part.within)})"
        return [result]
    diff = (column(rows, part.metric) - column(rows, base_of(part.metric))).groupby(rows[SEED]).mean()
    result.reference = f"base {fmt(column(rows, base_of(part.metric)).mean(), 5)}"
    result.other = f"tuned {describe(list(column(rows, part.metric).groupby(rows[SEED]).mean()))}"
    result.pairs = [f"seed {s}: {signed(v)}" for s, v in diff.items()] + ([note] if note else [])
    tested(result, diff.values, part.expect, part.margin)
    sigma = pooled_sigma(keyed(rows, [a for a in axes(rows) if a != part.best_of], part.metric))
    effect_sizes(result, float(diff.mean()), sigma, None)
    return [result]


def measure_seed_noise(runs, part: SeedNoise, sweep, seed_stds) -> list[PartResult]:
    """F1: pooled seed std within configurations, chi-square CI against the margin."""
    result = new_result(part, sweep, "small")
    rows = ok_runs(runs, part.metric)
    if rows.empty:
        result.rule = f"no ok runs with {part.metric}"
        return [result]
    series = keyed(rows, axes(rows), part.metric)
    groups = series.groupby(level=list(range(series.index.nlevels - 1))) \
        if series.index.nlevels > 1 else series.groupby(lambda _: 0)
    ss = sum(float(((g - g.mean()) ** 2).sum()) for _, g in groups)
    dof = sum(len(g) - 1 for _, g in groups)
    n = max(len(g) for _, g in groups)
    u = unit(part.metric)
    result.reference = f"{len(series)} runs in {groups.ngroups} configuration(s), up to {n} seeds each"
    result.threshold = f"σ_seed ≤ {fmt(part.margin, 3)} {u}"
    result.claim_text = f"claimed small: the 95% CI of σ_seed below {fmt(part.margin, 3)}"
    if n < stats.MIN_SEEDS or dof < 2:
        result.verdict = stats.underpowered(n)
        result.rule = f"{result.verdict}: at least {stats.MIN_SEEDS} seeds per configuration are needed"
        return [result]
    sigma, low, high = stats.sigma_interval(ss, dof)
    result.effect = f"σ_seed {fmt(sigma, 3)} {u} (pooled, {dof} df)"
    result.interval = f"95% CI {fmt(low, 3)} to {fmt(high, 3)} (chi-square)"
    from scipy.stats import chi2

    x = ss / part.margin ** 2
    result.test = stats.Test(stats.Interval(sigma, low, high, sigma, n, 0.95),
                             min(1.0, 2 * float(chi2.cdf(x, dof))),
                             min(1.0, 2 * float(chi2.sf(x, dof))), True, f"chi-square, {dof} df")
    result.verdict = PENDING
    return [result]


def measure_estimate(runs, part: EstimateFit, sweep, seed_stds) -> list[PartResult]:
    """F12: estimate / measured training peak per configuration, within the tolerance."""
    result = new_result(part, sweep, "matches")
    rows = ok_runs(runs, part.metric)
    rows = rows[column(rows, ESTIMATE_GIB).notna()]
    if rows.empty:
        result.rule = "no ok runs with both a dry-run estimate and a measured peak"
        return [result]
    ratio = (column(rows, ESTIMATE_GIB) / column(rows, part.metric))
    by_config = ratio.groupby([levels_of(rows, a) for a in axes(rows)] or rows[SEED].map(lambda _: "all")).mean()
    worst = float((by_config - 1).abs().max())
    whole = WHOLE_PROCESS in set(rows[MEMORY_SOURCE])
    result.reference = f"{len(by_config)} configuration(s)"
    result.effect = f"estimate / measured {fmt(by_config.min(), 3)} to {fmt(by_config.max(), 3)}"
    result.threshold = f"within ±{part.margin:.0%}"
    result.pairs = [f"{'/'.join(k) if isinstance(k, tuple) else k}: x{fmt(v, 3)}" for k, v in by_config.items()]
    result.verdict = stats.REPRODUCED if worst <= part.margin else stats.INCONCLUSIVE
    result.rule = (f"{result.verdict}: the estimate (weights + gradients + optimizer state + "
                   f"activations) is within {worst:.1%} of every measured peak, against ±{part.margin:.0%}"
                   + ("; measured is the whole-process peak (older record), which includes scoring" if whole else ""))
    return [result]


def measure_bound(runs, part: Bound, sweep, seed_stds) -> list[PartResult]:
    """F8: the training peak at ``part.at`` under the bound."""
    result = new_result(part, sweep, "fits")
    rows, _ = arm_rows(runs, part.at, part.metric)
    if rows.empty:
        result.rule = f"no ok runs at {pins_text(part.at)}"
        return [result]
    peak = float(column(rows, part.metric).max())
    result.other = f"{fmt(peak, 4)} {unit(part.metric)} (largest of {len(rows)} run(s))"
    result.threshold = f"≤ {fmt(part.bound, 3)} {unit(part.metric)}"
    result.verdict = stats.REPRODUCED if peak <= part.bound else stats.CONTRADICTED
    result.rule = f"{result.verdict}: the training peak against one {fmt(part.bound, 3)} GB GPU (deterministic)"
    return [result]


# --- best learning rate (F13) ---------------------------------------------------------------------

MEASURE = {
    Contrast: measure_per, Deterministic: measure_deterministic, TimeRatio: measure_time,
    Matters: measure_matters, Sensitivity: measure_sensitivity, BaseVsTuned: measure_base_vs_tuned,
    SeedNoise: measure_seed_noise, EstimateFit: measure_estimate, Bound: measure_bound,
    LRRatio: measure_lr_ratio, LRSpread: measure_lr_spread,
}


def measure(part: Part, runs: pd.DataFrame, sweep: str, seed_stds: dict[str, float]) -> list[PartResult]:
    """The results of one part on one sweep's rows."""
    return MEASURE[type(part)](runs, part, sweep, seed_stds)
