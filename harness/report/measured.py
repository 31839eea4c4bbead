"""A measured part: the :class:`PartResult` row the report shows and its number text, the arms a
part compares and their seed-paired differences, and the test a tested part leaves pending
(:func:`tested`; :mod:`.verdicts` decides it). The measurements of each kind of part that use
these are in :mod:`.effects` and :mod:`.lr_optimum`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import stats
from .frame import SEED, axes, base_of, column, level_sort_key, levels_of, ok_runs, select
from .parts import METRICS, NLL, Contrast, Part, Pins

PENDING = "pending"


@dataclass
class PartResult:
    """One measured part of a claim, ready for the report table."""

    label: str
    metric: str
    expect: str
    published: str
    sweep: str = "-"
    group: str | None = None
    verdict: str = stats.NOT_MEASURED
    rule: str = ""
    reference: str = "-"
    other: str = "-"
    effect: str = "-"
    interval: str = "-"
    per_sigma: str = "-"
    per_gain: str = "-"
    threshold: str = "-"
    p: str = "-"
    pairs: list[str] = field(default_factory=list)
    test: stats.Test | None = None
    claim_text: str = ""
    # A verdict the measurement cannot support, with why (an arm at the edge of its grid):
    # {"reproduced" or "contradicted": reason}; the decision then reads inconclusive.
    withheld: dict[str, str] = field(default_factory=dict)


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for the report: ``digits`` significant digits, thousands separated."""
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    text = f"{value:.{digits}g}"
    return text if "e" not in text else f"{value:.2e}"


def signed(value: float, digits: int = 3) -> str:
    """A difference with its sign."""
    return ("+" if value > 0 else "") + fmt(value, digits)


def unit(metric: str) -> str:
    return METRICS.get(metric, (metric, "", False))[1]


def name(metric: str) -> str:
    return METRICS.get(metric, (metric, "", False))[0]


def higher_is_better(metric: str) -> bool:
    return METRICS.get(metric, ("", "", False))[2]


def describe(vals: list[float]) -> str:
    """Mean, std and 95% interval of repeated runs in words (the interval only with >= 3)."""
    if not len(vals):
        return "-"
    ci = stats.t_interval(vals)
    if len(vals) == 1:
        return f"{fmt(ci.mean, 5)} (1 seed, no interval)"
    text = f"{fmt(ci.mean, 5)} ± {fmt(ci.sd, 2)} ({len(vals)} seeds"
    if len(vals) < stats.MIN_SEEDS:
        return text + ", no interval)"
    return text + f"; 95% CI {fmt(ci.low, 5)} to {fmt(ci.high, 5)})"


def pins_text(pins: Pins) -> str:
    return ", ".join(f"{a.split('.')[-1]}={v}" for a, v in pins) or "all"


def new_result(part: Part, sweep: str, expect: str = "-") -> PartResult:
    return PartResult(part.label, part.metric, getattr(part, "expect", expect), part.published,
                      sweep, part.group)


# --- arms and seed-paired differences ----------------------------------------------------------


def best_level(rows: pd.DataFrame, axis: str) -> str | None:
    """The level of ``axis`` with the lowest mean held-out NLL among ``rows``."""
    nll = column(rows, NLL)
    if nll.notna().sum() == 0:
        return None
    means = nll.groupby(levels_of(rows, axis)).mean().dropna()
    return str(means.idxmin()) if len(means) else None


def arm_rows(runs: pd.DataFrame, pins: Pins, metric: str,
             best_of: str | None = None) -> tuple[pd.DataFrame, str]:
    """Ok runs with ``metric`` at ``pins``; with ``best_of``, only those at the arm's best level
    of that axis (and which one it was)."""
    rows = select(ok_runs(runs, metric), pins)
    if best_of is None or rows.empty:
        return rows, ""
    best = best_level(rows, best_of)
    if best is None:
        return rows.iloc[0:0], ""
    return rows[levels_of(rows, best_of) == best], f"{best_of.split('.')[-1]}={best}"


def grid_edge(runs: pd.DataFrame, pins: Pins, axis: str, best_rows: pd.DataFrame) -> str:
    """Where the arm's best level of ``axis`` (that of ``best_rows``) lies in the arm's grid:
    ``"low edge"``, ``"high edge"``, ``"only level"`` or ``""`` (inside). The grid is every level
    the arm ran, whatever the run's status, so a best level next to a diverged one is inside."""
    grid = sorted(set(levels_of(select(runs, pins), axis)) - {"-"}, key=level_sort_key)
    best = set(levels_of(best_rows, axis))
    if len(grid) < 2:
        return "only level"
    if grid[0] in best:
        return "low edge"
    return "high edge" if grid[-1] in best else ""


def keyed(rows: pd.DataFrame, rest: list[str], metric: str) -> pd.Series:
    """``metric`` by (levels of ``rest``..., seed), averaged over duplicates."""
    keys = pd.DataFrame({a: levels_of(rows, a) for a in rest}, index=rows.index)
    keys[SEED] = rows[SEED]
    keys["value"] = column(rows, metric)
    return keys.groupby([*rest, SEED])["value"].mean()


def pooled_sigma(*arms: pd.Series) -> float | None:
    """The pooled within-configuration seed std of (config..., seed) series, one per arm."""
    ss, dof = 0.0, 0
    for series in arms:
        groups = series.groupby(level=list(range(series.index.nlevels - 1))) \
            if series.index.nlevels > 1 else series.groupby(lambda _: 0)
        ss += sum(float(((g - g.mean()) ** 2).sum()) for _, g in groups)
        dof += sum(len(g) - 1 for _, g in groups)
    return math.sqrt(ss / dof) if dof > 0 else None


@dataclass
class Paired:
    """Seed-paired differences between two arms and what is needed to describe them."""

    d: pd.Series  # by seed: mean over matched configurations of (other - reference)
    reference: pd.Series  # by (config..., seed)
    other: pd.Series
    notes: list[str]
    reference_rows: pd.DataFrame
    edges: dict[str, str] = field(default_factory=dict)  # arm -> where its best level lies


def paired(runs: pd.DataFrame, part: Contrast, within: Pins = ()) -> Paired | str:
    """Seed-paired differences of a Contrast, or why there are none."""
    used = {a for a, _ in part.reference + part.other + part.within + within}
    used |= {a for a in (part.best_of, part.per) if a}
    rest = [a for a in axes(runs) if a not in used]
    ref_metric = part.reference_metric or part.metric
    ref_pins, oth_pins = part.reference + part.within + within, part.other + part.within + within
    ref, ref_note = arm_rows(runs, ref_pins, ref_metric, part.best_of)
    oth, oth_note = arm_rows(runs, oth_pins, part.metric, part.best_of)
    missing = [pins_text(p) for p, rows in ((part.reference, ref), (part.other, oth)) if rows.empty]
    if missing:
        pinned = f" ({pins_text(part.within + within)})" if part.within or within else ""
        return f"no ok runs with {name(part.metric) if not ref.empty else name(ref_metric)} at " \
               f"{' or '.join(missing)}{pinned}"
    r, o = keyed(ref, rest, ref_metric), keyed(oth, rest, part.metric)
    joined = pd.concat([r.rename("r"), o.rename("o")], axis=1, join="inner")
    if joined.empty:
        return "no configuration and seed was run in both arms"
    d = (joined["o"] - joined["r"]).groupby(level=SEED).mean()
    d = d.reindex(sorted(d.index, key=level_sort_key))
    notes = [f"{which} at its best {n}" for which, n in (("reference", ref_note), ("other", oth_note)) if n]
    edges = {} if part.best_of is None else {
        which: grid_edge(runs, pins, part.best_of, rows)
        for which, pins, rows in (("reference", ref_pins, ref), ("other", oth_pins, oth))}
    return Paired(d, r, o, notes, ref, edges)


def withhold_at_edges(result: PartResult, part: Contrast, edges: dict[str, str]) -> None:
    """An arm put at its best level that lies at its grid's edge might do better beyond it, so
    the verdict that its doing better would overturn is withheld. On held-out NLL (lower is
    better, and the level that minimises it was chosen) that is one verdict per arm; on any
    other metric, or an equivalence, both."""
    axis = (part.best_of or "").split(".")[-1]
    for arm, edge in edges.items():
        if not edge:
            continue
        reason = f"the {arm}'s best {axis} is its grid's {edge}, so it may do better beyond it"
        if part.metric != NLL or part.expect == "same":
            overturned = (stats.REPRODUCED, stats.CONTRADICTED)
        else:  # "lower": the other arm claimed better; "higher": claimed worse
            better_claimed = part.expect == "lower"
            overturned = ((stats.REPRODUCED,) if (arm == "reference") == better_claimed
                          else (stats.CONTRADICTED,))
        for verdict in overturned:
            result.withheld.setdefault(verdict, reason)


def effect_sizes(result: PartResult, effect: float, sigma: float | None, gain: float | None,
                 sigma_source: str = "") -> None:
    """Δ/σ_seed and Δ as a share of the base -> tuned gain."""
    if sigma:
        result.per_sigma = f"{effect / sigma:+.2f} (σ_seed {fmt(sigma, 2)}{sigma_source})"
    if gain:
        result.per_gain = f"{effect / gain:+.1%} of {signed(gain)}"


def base_gain(rows: pd.DataFrame, metric: str) -> float | None:
    """Mean (tuned - base) of ``metric`` over ``rows``, when the records have a base score."""
    if not metric.startswith("eval.") or base_of(metric) not in rows.columns:
        return None
    gain = (column(rows, metric) - column(rows, base_of(metric))).dropna()
    return float(gain.mean()) if len(gain) and gain.mean() != 0 else None


def tested(result: PartResult, d, expect: str, margin: float, what: str = "seeds") -> None:
    """Attach the direction or equivalence test of differences ``d`` (or the underpowered
    verdict) and the interval text."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    mean = float(d.mean())
    u = unit(result.metric)
    result.effect = f"{signed(mean)} {u}".rstrip()
    if expect == "same":
        result.threshold = f"±{fmt(margin, 3)} {u} (equivalence)".replace("  ", " ")
        result.claim_text = f"claimed no change: the 90% CI inside ±{fmt(margin, 3)}"
    else:
        result.threshold = f"{fmt(margin, 3)} {u} (smallest effect of interest)".replace("  ", " ")
        result.claim_text = f"claimed {expect} by at least {fmt(margin, 3)}"
    if n < stats.MIN_SEEDS:
        result.verdict = stats.underpowered(n, what)
        result.interval = f"{n} {what}, no interval"
        result.rule = f"{result.verdict}: at least {stats.MIN_SEEDS} {what} per arm are needed"
        return
    test = stats.tost(d, margin) if expect == "same" else stats.direction_test(d, expect, margin)
    ci = test.interval
    result.interval = f"{ci.confidence:.0%} CI {signed(ci.low)} to {signed(ci.high)} ({test.name} {what})"
    result.test, result.verdict = test, PENDING
