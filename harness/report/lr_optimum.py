"""The best learning rate (F13): each arm's loss curve over the lr grid, its optimum (refined by a
parabola in log10 lr) per seed, and the two kinds of part decided on optima: the ratio of two
arms' best lr (:class:`~.parts.LRRatio`) and their spread over arms (:class:`~.parts.LRSpread`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import stats
from .frame import SEED, column, level_sort_key, levels_of, normalize, select
from .measured import PartResult, fmt, higher_is_better, new_result, pins_text, signed
from .parts import LRRatio, LRSpread, Pins

EDGE_VERDICT = f"{stats.INCONCLUSIVE} (optimum at the grid edge)"


@dataclass
class LRCurve:
    """One arm's ``metric`` by seed (rows) and lr level (columns, ascending), lower is better;
    +inf where a run diverged; only seeds with every level measured."""

    table: pd.DataFrame
    x: np.ndarray  # log10 of the levels
    dropped: list[str]

    def optimum(self, rows=None, censored: bool = False):
        values = self.table.to_numpy() if rows is None else self.table.to_numpy()[rows]
        curve = values.mean(axis=0)
        return stats.censored_optimum(self.x, curve) if censored else stats.curve_optimum(self.x, curve)


def lr_curve(runs: pd.DataFrame, pins: Pins, axis: str, metric: str) -> LRCurve | str:
    """The arm at ``pins`` over the levels of ``axis``: the seed-mean of ``metric`` within each
    (seed, level) over axes left free; a diverged run makes its (seed, level) +inf; seeds missing
    a level (failed, lost, not run) are dropped. A string says why there is no curve."""
    rows = select(normalize(runs), pins)
    frame = pd.DataFrame({"level": levels_of(rows, axis), SEED: rows[SEED], "status": rows["status"],
                          "value": column(rows, metric) * (-1 if higher_is_better(metric) else 1)})
    frame = frame[(frame["level"] != "-") & (frame[SEED] != "-")]
    levels = sorted(set(frame["level"]), key=level_sort_key)
    if any(level_sort_key(v)[0] or float(v) <= 0 for v in levels):
        return f"{axis} has non-numeric or non-positive levels at {pins_text(pins)}"
    if len(levels) < 3:
        return f"fewer than 3 levels of {axis} with runs at {pins_text(pins)}"
    seeds = sorted(set(frame[SEED]), key=level_sort_key)
    ok = frame[(frame["status"] == "ok") & frame["value"].notna()]
    table = ok.groupby([SEED, "level"])["value"].mean().unstack("level") if len(ok) else pd.DataFrame()
    table = table.reindex(index=seeds, columns=levels).astype(float)
    for seed, at in frame.loc[frame["status"] == "diverged", [SEED, "level"]].itertuples(index=False):
        table.loc[seed, at] = math.inf
    complete = table.dropna()
    return LRCurve(complete, np.log10([float(v) for v in levels]),
                   [s for s in seeds if s not in complete.index])


def lr_text(value: float) -> str:
    if value == -math.inf:
        return "open (below the grid)"
    if value == math.inf:
        return "open (above the grid)"
    return fmt(10 ** value, 3)


def decades(value: float) -> str:
    return {-math.inf: "-inf", math.inf: "+inf"}.get(value) or signed(value, 3)


def optimum_text(curve: LRCurve, rows: list[int]) -> str:
    """An arm's lr*, how it was found, and its percentile bootstrap interval over the given seed
    rows (descriptive: with 3 seeds it undercovers, so verdicts use paired t-intervals)."""
    value, how = curve.optimum(rows)
    low, high = stats.seed_bootstrap(len(rows), lambda pick: curve.optimum([rows[i] for i in pick], True))
    return (f"lr* {lr_text(value)} ({how}; 95% bootstrap CI {lr_text(low)} to {lr_text(high)}, "
            f"{len(rows)} seeds)")


def lr_curves(runs, part, arms: list[Pins], result: PartResult) -> tuple[list[LRCurve], list[str]] | None:
    """Each arm's curve on the seeds every arm has (None, with the reason in ``result``, when an
    arm has none)."""
    curves = []
    for pins in arms:
        curve = lr_curve(runs, pins, part.axis, part.metric)
        if isinstance(curve, str):
            result.rule = curve
            return None
        curves.append(curve)
    seeds = sorted(set.intersection(*(set(c.table.index) for c in curves)), key=level_sort_key)
    return [LRCurve(c.table.loc[seeds], c.x, c.dropped) for c in curves], seeds


def optimum_difference(lower: LRCurve, upper: LRCurve, n: int) -> stats.Interval:
    """The 95% Student-t interval (n - 1 df) of the seed-paired differences of single-seed optima,
    log10 lr*_upper,s - log10 lr*_lower,s; open (-inf, inf) when a seed's optimum lies on a grid
    edge."""
    d = [upper.optimum([i], True) - lower.optimum([i], True) for i in range(n)]
    if all(math.isfinite(v) for v in d):
        return stats.t_interval(d)
    return stats.Interval(math.nan, -math.inf, math.inf, math.nan, n, 0.95)


def flat_decision(intervals: list[stats.Interval], margin: float) -> str:
    """F13b from the pairwise intervals of log10 lr* differences: every one inside ±margin
    reproduces, one entirely outside contradicts, anything else is inconclusive."""
    decided = [stats.band_decision(ci.low, ci.high, -margin, margin) for ci in intervals]
    if all(v == stats.REPRODUCED for v in decided):
        return stats.REPRODUCED
    return stats.CONTRADICTED if stats.CONTRADICTED in decided else stats.INCONCLUSIVE


def lr_seed_pairs(curves: list[LRCurve], seeds: list[str]) -> list[str]:
    """Each seed's own lr* per arm (its single-seed curve), edges marked."""
    def one(curve, i):
        value, how = curve.optimum([i])
        return lr_text(value) + (f" ({how})" if how in (stats.LOW_EDGE, stats.HIGH_EDGE) else "")
    return [f"seed {s}: lr* " + " / ".join(one(c, i) for c in curves) for i, s in enumerate(seeds)]


def edge_rule(curves: list[LRCurve], arms: list[Pins]) -> str:
    edges = [f"{pins_text(p)} at the {how} ({lr_text(c.x[0] if how == stats.LOW_EDGE else c.x[-1])})"
             for c, p in zip(curves, arms, strict=True)
             for how in [c.optimum()[1]] if how in (stats.LOW_EDGE, stats.HIGH_EDGE)]
    return "; ".join(edges)


def measure_lr_ratio(runs, part: LRRatio, sweep, seed_stds) -> list[PartResult]:
    """F13a: log10(lr*_other / lr*_reference) with a seed bootstrap, against the declared band."""
    result = new_result(part, sweep)
    low_band, high_band = part.target - part.margin, part.target + part.margin
    result.threshold = (f"log10 ratio in [{low_band:g}, {high_band:g}] "
                        f"(x{10 ** low_band:.2g} to x{10 ** high_band:.2g})")
    result.claim_text = f"claimed ratio about x{10 ** part.target:g}"
    arms = [part.reference, part.other]
    found = lr_curves(runs, part, arms, result)
    if found is None:
        return [result]
    (ref, oth), seeds = found
    n = len(seeds)
    if n == 0:
        result.rule = "no seed has every lr level measured in both arms"
        return [result]
    rows = list(range(n))
    result.reference, result.other = optimum_text(ref, rows), optimum_text(oth, rows)
    result.pairs = lr_seed_pairs([ref, oth], seeds) + [f"seeds dropped (a level not measured): "
                                                       f"{', '.join(c.dropped)}" for c in (ref, oth) if c.dropped]
    (xr, _), (xo, _) = ref.optimum(), oth.optimum()
    if not (math.isfinite(xr) and math.isfinite(xo)):
        result.rule = "every lr level diverged in one arm"
        return [result]
    ratio = xo - xr
    result.effect = f"x{fmt(10 ** ratio, 3)} (log10 {signed(ratio)})"
    if n < stats.MIN_SEEDS:
        result.verdict = stats.underpowered(n)
        result.rule = f"{result.verdict}: at least {stats.MIN_SEEDS} seeds per arm are needed"
        return [result]
    ci = optimum_difference(ref, oth, n)
    low, high = ci.low, ci.high
    result.interval = (f"95% CI log10 {decades(low)} to {decades(high)} (paired t over seeds of "
                       f"the single-seed optima, n = {n})")
    edges = edge_rule([ref, oth], arms)
    if edges:
        result.effect += " (an optimum on a grid edge: a bound, not an estimate)"
        result.verdict = EDGE_VERDICT
        result.rule = f"{EDGE_VERDICT}: {edges}; extend the grid there"
        return [result]
    result.verdict = stats.band_decision(low, high, low_band, high_band)
    result.rule = (f"{result.verdict}: the 95% paired-t interval over seeds of log10(lr*_other / "
                   f"lr*_reference) against [{low_band:g}, {high_band:g}] (inside: reproduced; "
                   "entirely outside: contradicted; not in the Holm family: no p-value); "
                   f"{result.claim_text}")
    return [result]


def measure_lr_spread(runs, part: LRSpread, sweep, seed_stds) -> list[PartResult]:
    """F13b: spread (max - min) of log10 lr* over the arms, with a seed bootstrap, below the margin."""
    result = new_result(part, sweep)
    result.threshold = f"spread < {fmt(part.margin, 3)} decades (x{10 ** part.margin:.2g})"
    result.claim_text = f"claimed flat: best lr within {fmt(part.margin, 3)} decades across arms"
    arms = list(part.arms)
    found = lr_curves(runs, part, arms, result)
    if found is None:
        return [result]
    curves, seeds = found
    n = len(seeds)
    if n == 0:
        result.rule = "no seed has every lr level measured in every arm"
        return [result]
    rows = list(range(n))
    result.reference = "; ".join(f"{pins_text(p)}: {optimum_text(c, rows)}"
                                 for p, c in zip(arms, curves, strict=True))
    result.pairs = lr_seed_pairs(curves, seeds)
    points = [c.optimum()[0] for c in curves]
    if not all(math.isfinite(v) for v in points):
        result.rule = "every lr level diverged in an arm"
        return [result]
    spread = max(points) - min(points)
    result.effect = f"spread {fmt(spread, 3)} decades (x{fmt(10 ** spread, 3)})"
    if n < stats.MIN_SEEDS:
        result.verdict = stats.underpowered(n)
        result.rule = f"{result.verdict}: at least {stats.MIN_SEEDS} seeds per arm are needed"
        return [result]

    pairs = [(a, b, optimum_difference(curves[a], curves[b], n))
             for a in range(len(curves)) for b in range(a + 1, len(curves))]
    result.interval = "95% CIs of log10 lr* differences (paired t over seeds): " + "; ".join(
        f"{pins_text(arms[b])} - {pins_text(arms[a])} {decades(ci.low)} to {decades(ci.high)}"
        for a, b, ci in pairs)
    edges = edge_rule(curves, arms)
    if edges:
        result.effect += " (an optimum on a grid edge: a bound, not an estimate)"
        result.verdict = EDGE_VERDICT
        result.rule = f"{EDGE_VERDICT}: {edges}; extend the grid there"
        return [result]
    result.verdict = flat_decision([ci for _, _, ci in pairs], part.margin)
    result.rule = (f"{result.verdict}: every pair of arms' 95% paired-t interval of the log10 lr* "
                   f"difference inside ±{fmt(part.margin, 3)} decades reproduces (the spread is then "
                   f"below the margin); one entirely outside contradicts (not in the Holm family: "
                   f"no p-value); {result.claim_text}")
    return [result]

