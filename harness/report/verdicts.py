"""From measured parts to a finding's verdict: Holm's adjustment within the finding, the
declared combine rule, and the finding-specific notes (F1's power table, F7's and F9's best
settings). ``evaluate_finding`` is the one entry point the report and the notebooks use."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import stats
from .claims import CLAIMS, SWEEP_CLAIMS, Claim, parts_of
from .effects import measure
from .frame import (
    SEED,
    axes,
    cells,
    column,
    config_label,
    flags,
    level_sort_key,
    levels_of,
    normalize,
    ok_runs,
    values,
)
from .measured import PENDING, PartResult, fmt, new_result, signed
from .parts import NLL, PROBES

UNDERPOWERED = "underpowered"


def finalize(results: list[PartResult]) -> int:
    """Decide every pending part: Holm's adjustment over the finding's judged parts (context
    parts are decided unadjusted). Returns the size of the Holm family."""
    family = [r for r in results if r.verdict == PENDING and r.group is not None]
    adjusted_for = stats.holm([r.test.p_for for r in family])
    adjusted_against = stats.holm([r.test.p_against for r in family])
    decided = list(zip(family, adjusted_for, adjusted_against, strict=True))
    decided += [(r, r.test.p_for, r.test.p_against) for r in results
                if r.verdict == PENDING and r.group is None]
    for result, p_for, p_against in decided:
        verdict, p_for, p_against = stats.decide(result.test, p_for, p_against)
        adjusted = f"Holm over {len(family)}" if result.group is not None else "unadjusted, context"
        result.p = f"{p_for:.3g} for / {p_against:.3g} against ({adjusted})"
        size = "" if "TOST" in result.test.name or "chi-square" in result.test.name else (
            "; the effect meets the declared size" if result.test.size_ok
            else "; the effect falls short of the declared size")
        why = (f"{result.test.name}; the claim's p {p_for:.3g}, the opposite's {p_against:.3g} "
               f"({adjusted}, each rejected at {stats.ALPHA:g}){size}; {result.claim_text}")
        if verdict in result.withheld:
            why = f"the test alone says {verdict}, but {result.withheld[verdict]}; {why}"
            verdict = stats.INCONCLUSIVE
        result.verdict, result.rule = verdict, f"{verdict}: {why}"
    return len(family)


def group_verdict(verdicts: list[str], how: str) -> str:
    """A group's verdict from its parts': 'all' needs every part reproduced, 'any' one (with none
    contradicted); a contradicted part contradicts an 'all' group; a group none of whose parts
    was measured is 'not measured'."""
    plain = [v.split(" (")[0] for v in verdicts]
    if plain and all(v == stats.NOT_MEASURED for v in plain):
        return stats.NOT_MEASURED
    reproduced = plain.count(stats.REPRODUCED)
    contradicted = plain.count(stats.CONTRADICTED)
    if how == "all":
        if contradicted:
            return stats.CONTRADICTED
        return stats.REPRODUCED if plain and reproduced == len(plain) else stats.INCONCLUSIVE
    if reproduced and not contradicted:
        return stats.REPRODUCED
    if contradicted and not reproduced:
        return stats.CONTRADICTED
    return stats.INCONCLUSIVE


def combine(claim: Claim, results: list[PartResult]) -> tuple[str, str]:
    """A finding's verdict from its parts' by the claim's declared rule, and the rule text."""
    verdicts = {g: group_verdict([r.verdict for r in results if r.group == g], how)
                for g, how in claim.groups}
    if stats.CONTRADICTED in verdicts.values():
        verdict = stats.CONTRADICTED
    elif verdicts and all(v == stats.NOT_MEASURED for v in verdicts.values()):
        verdict = stats.NOT_MEASURED  # nothing to judge yet (a sweep partly run), not an inconclusive result
    elif all(v == stats.REPRODUCED for v in verdicts.values()):
        verdict = stats.REPRODUCED
    else:
        verdict = stats.INCONCLUSIVE
        judged = [r.verdict for r in results if r.group is not None]
        if any(UNDERPOWERED in v for v in judged):
            verdict += f" ({UNDERPOWERED})"
    tally = "; ".join(f"{g}: {v}" for g, v in verdicts.items())
    return verdict, f"{claim.rule}; {tally}"


def sweep_rows(runs: pd.DataFrame, sweep: str) -> pd.DataFrame:
    if "sweep.name" not in runs.columns:
        return runs.iloc[0:0]
    return runs[runs["sweep.name"] == sweep]


def evaluate_finding(finding: str, runs: pd.DataFrame,
                     seed_stds: dict[str, float] | None = None) -> tuple[str, str, list[PartResult]]:
    """Verdict, rule and measured parts of one finding on the loader's rows (any sweeps: each
    part is measured on the rows of the sweep that declares it; parts of sweeps absent from the
    rows are 'not measured')."""
    runs = normalize(runs)
    results: list[PartResult] = []
    for sweep, part in parts_of(finding):
        rows = sweep_rows(runs, sweep)
        if rows.empty:
            result = new_result(part, sweep)
            result.rule = f"sweep `{sweep}` is not among the records"
            results.append(result)
            continue
        measured = measure(part, rows, sweep, seed_stds or {})
        mixed = mixed_rounding(rows)
        if mixed:
            for result in measured:
                result.withheld.setdefault(stats.REPRODUCED, mixed)
                result.withheld.setdefault(stats.CONTRADICTED, mixed)
        results += measured
    family = finalize(results)
    verdict, rule = combine(CLAIMS[finding], results)
    return verdict, f"{rule}; Holm family of {family} tested part(s)", results


def mixed_rounding(rows: pd.DataFrame) -> str | None:
    """Why a sweep's ok runs are not one measurement, or None: some trained compiled blocks and
    some eager, with bf16 weights. The two round differently, and their held-out NLLs parted by
    up to two seed SDs on the same configurations and seeds (docs/benchmarks.md, 2026-12-05), so
    a contrast across them may measure the rounding, not the claim."""
    ok = ok_runs(rows)
    if "config.trainer.compile" not in ok.columns:
        return None
    compiled = flags(ok["config.trainer.compile"])
    bf16 = ok["precision"].eq("bf16-true") if "precision" in ok.columns else pd.Series(False, index=ok.index)
    if not (compiled & bf16).any() or not (~compiled & bf16).any():
        return None
    return (f"its runs mix compiled ({int((compiled & bf16).sum())}) and eager ({int((~compiled & bf16).sum())}) "
            "training with bf16 weights, which round differently (docs/benchmarks.md, 2026-12-05)")


def findings_of(runs: pd.DataFrame, name: str) -> list[str]:
    """The findings a sweep tests: the claims table, plus its records' ``sweep.finding``."""
    ids = list(SWEEP_CLAIMS.get(name, {}))
    if "sweep.finding" in runs.columns:
        for text in runs["sweep.finding"].dropna().unique():
            ids += [f.strip() for f in str(text).split(",") if f.strip()]
    return sorted(set(ids) & set(CLAIMS), key=lambda f: int(f[1:]))


def parts_frame(parts: list[PartResult]) -> pd.DataFrame:
    """Measured parts as a DataFrame (for notebooks)."""
    return pd.DataFrame([{k: v for k, v in vars(p).items() if k != "test"} for p in parts])


def seed_spread_for(frame: pd.DataFrame, runs: pd.DataFrame | None = None) -> dict[str, float]:
    """Per metric, the pooled seed std of the F1 ``seeds`` sweep in ``frame`` (when it ran the
    same model at the same scale as ``runs``): the noise other verdicts are compared to."""
    frame = normalize(frame)
    if "sweep.name" not in frame.columns or not (frame["sweep.name"] == "seeds").any():
        return {}
    seeds = ok_runs(frame[frame["sweep.name"] == "seeds"])
    if runs is not None:
        for c in ("config.model.name", "sweep.scale"):
            if c in frame.columns and set(seeds[c].dropna()) != set(ok_runs(runs)[c].dropna()):
                return {}
    spreads = {}
    for metric in (NLL, *PROBES):
        groups = [values(rows, metric) for rows in cells(seeds, metric).values()]
        dof = sum(len(g) - 1 for g in groups if len(g) > 1)
        if dof:
            ss = sum(float(np.var(g) * len(g)) for g in groups if len(g) > 1)
            spreads[metric] = math.sqrt(ss / dof)
    return spreads


# --- notes --------------------------------------------------------------------------------------

def power_table(runs: pd.DataFrame) -> tuple[list[str], list[list[str]]] | None:
    """F1: per step budget, the seed σ of held-out NLL per configuration, the σ of the seed-paired
    difference between the configurations, and the seeds needed for 0.01 and 0.04 nats to be
    >= 3 standard errors of that difference."""
    rows = ok_runs(runs, NLL)
    if rows.empty:
        return None
    budget = "trainer.max_steps" if "trainer.max_steps" in axes(rows) else None
    configs = [a for a in axes(rows) if a != budget]
    out = []
    for steps in sorted(set(levels_of(rows, budget)) if budget else ["-"], key=level_sort_key):
        at = rows[levels_of(rows, budget) == steps] if budget else rows
        label = pd.Series([config_label(configs, tuple(levels_of(at, a)[i] for a in configs))
                           for i in at.index], index=at.index)
        table = pd.DataFrame({"c": label, SEED: at[SEED], "v": column(at, NLL)}) \
            .groupby([SEED, "c"])["v"].mean().unstack("c")
        sigmas = "; ".join(f"{c}: {fmt(table[c].std(), 2)}" for c in table.columns)
        sd_diff = (table.iloc[:, 1] - table.iloc[:, 0]).dropna().std() if table.shape[1] >= 2 else math.nan
        need = [math.ceil((3 * sd_diff / e) ** 2) if sd_diff == sd_diff else None for e in (0.01, 0.04)]
        out.append([steps, sigmas, fmt(sd_diff, 2),
                    fmt(sd_diff / math.sqrt(3), 2) if sd_diff == sd_diff else "-",
                    *[str(max(n, 2)) if n is not None else "-" for n in need]])
    head = ["step budget", "σ_seed of NLL per configuration", "σ of the paired difference",
            "SE of the difference at 3 seeds", "seeds for 0.01 nats at 3 SE", "seeds for 0.04 nats at 3 SE"]
    return head, out


def best_configuration_note(runs: pd.DataFrame) -> str:
    """F7: the best measured configuration and which published best it matches."""
    runs = normalize(runs)
    by_config = cells(runs, NLL)
    if not by_config:
        return ""
    names = axes(runs)
    means = {k: float(np.mean(values(r, NLL))) for k, r in by_config.items()}
    best = min(means, key=means.get)
    setting = dict(zip(names, best, strict=True))
    ratio = setting.get("adapter.alpha_over_r")
    matches = {"2": "the ratio of most posts' best (r=256, alpha=512)",
               "0.5": "the ratio of one post's best (r=256, alpha=128)"}.get(
        ratio, "neither published best's ratio (2 in most posts, 0.5 in one)")
    ranked = sorted(means, key=means.get)[1:4]
    return (f"Best measured: {config_label(names, best)} (mean held-out NLL {fmt(means[best], 5)}); "
            f"its alpha/r = {ratio} is {matches}; the published best rank is 256. Next: "
            + "; ".join(f"{config_label(names, k)} ({signed(means[k] - means[best])})" for k in ranked)
            + ". Which differences are real is what the per-rank contrasts above say.")


def best_lr_note(runs: pd.DataFrame, by: str, default_lr: str = "0.0003") -> str:
    """Each level of ``by``'s best learning rate (by mean held-out NLL)."""
    rows = ok_runs(runs, NLL)
    if rows.empty or by not in axes(rows) or "optimizer.lr" not in axes(rows):
        return ""
    table = column(rows, NLL).groupby([levels_of(rows, by), levels_of(rows, "optimizer.lr")]).mean()
    best = {k: g.droplevel(0).idxmin() for k, g in table.groupby(level=0)}
    text = "; ".join(f"{by.split('.')[-1]}={k}: lr {v}" for k, v in
                     sorted(best.items(), key=lambda kv: level_sort_key(kv[0])))
    if by == "adapter.r":
        off = [k for k, v in best.items() if v != default_lr]
        text += (". The alpha comparison (rank_alpha, lr 3e-4) was made at the best lr of every rank"
                 if not off else f". At r={', '.join(sorted(off, key=level_sort_key))} the best lr is "
                 "not the 3e-4 the alpha comparison used, so there it is confounded with the "
                 "effective learning rate")
    return f"Best learning rate by mean held-out NLL: {text}."


def parameter_counts_note(runs: pd.DataFrame, by: str) -> str:
    """The trainable-parameter count each level of ``by`` measured (F14: matched counts)."""
    rows = ok_runs(runs)
    if rows.empty or by not in axes(rows) or "trainable_params" not in rows.columns:
        return ""
    counts = column(rows, "trainable_params").groupby(levels_of(rows, by)).agg(["min", "max"]).dropna()
    if counts.empty:
        return ""
    text = "; ".join(f"{k}: {v['min']:,.0f}" + (f" to {v['max']:,.0f}" if v["max"] != v["min"] else "")
                     for k, v in sorted(counts.iterrows(), key=lambda kv: level_sort_key(kv[0])))
    return f"Trainable parameters in the records, by {by.split('.')[-1]}: {text}."


def finding_notes(finding: str, frame: pd.DataFrame) -> list:
    """Text (str) and tables ((head, rows)) that go under a finding's parts."""
    frame = normalize(frame)
    out: list = list(CLAIMS[finding].notes)
    if finding == "F1" and not sweep_rows(frame, "seeds").empty:
        table = power_table(sweep_rows(frame, "seeds"))
        if table:
            out += ["Power: the standard error of a seed-paired difference of held-out NLL, per "
                    "step budget (a quality sweep should run at a budget where its smallest effect "
                    "of interest is at least 3 SE with the seeds it has).", table]
    if finding == "F7":
        out += [n for n in (best_configuration_note(sweep_rows(frame, "rank_alpha")),
                            best_lr_note(sweep_rows(frame, "rank_lr"), "adapter.r")) if n]
    if finding in ("F9", "F10"):
        out += [n for n in (best_lr_note(sweep_rows(frame, "full_vs_lora"), "method"),) if n]
    if finding == "F14":
        rows = sweep_rows(frame, "targets_matched")
        out += [n for n in (parameter_counts_note(rows, "method"), best_lr_note(rows, "method")) if n]
    return out
