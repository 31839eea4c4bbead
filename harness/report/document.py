"""Assembling the report: header, summary, one section per finding, one per sweep, the rules;
written as ``report.md`` and ``report.html`` with the PNG plots next to them."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pandas as pd

from ..results import load_records
from . import stats
from .claims import CLAIMS, SWEEP_CLAIMS
from .frame import (
    MEMORY,
    MEMORY_GB,
    MEMORY_SOURCE,
    PARAM,
    WHOLE_PROCESS,
    axes,
    cells,
    config_key,
    config_label,
    level,
    level_sort_key,
    normalize,
    std,
    sweep_names,
    sweep_runs,
    values,
)
from .measured import PartResult, fmt, name
from .parts import (
    ADD1D,
    ADD1D_ACC,
    AGREE,
    ARITH_2DS_PPL,
    ARITH_ACCS,
    CAPITALS,
    ESTIMATE_GIB,
    NLL,
    QUANT_NLL,
    TRAIN_SECONDS,
    LRRatio,
    LRSpread,
    Part,
)
from .plots import PLOTS
from .render import markdown, scrub, to_html
from .verdicts import evaluate_finding, finding_notes, findings_of, seed_spread_for

PLAN_NAME = "sweep.json"  # written by the sweep driver (sweeps.driver.PLAN_NAME)
NOT_OK = ("failed", "oom", "diverged", "skipped", "pruned", "lost")

RULES_TEXT = [
    f"Replicates: a part is tested on seed-matched pairs (the same seed in both arms); fewer than "
    f"{stats.MIN_SEEDS} seeds per arm gives 'inconclusive (underpowered: n seeds)'. For each seed "
    "s, d_s = other - reference (averaged over the configurations the two arms share on axes the "
    "part leaves free); the effect is mean(d_s) with a Student-t interval on n - 1 df.",
    "Direction claim (lower / higher): reproduced when the 95% CI excludes 0 on the claimed side "
    "and |effect| is at least the part's declared smallest effect of interest (SESOI); "
    "contradicted when the CI excludes 0 on the other side; otherwise inconclusive.",
    "No-change claim: two one-sided tests (TOST) against the declared equivalence margin: "
    "reproduced when the 90% CI lies inside ±margin; contradicted when it lies entirely outside; "
    "otherwise inconclusive. Absence of evidence never reproduces a no-change claim.",
    "'Matters' claim (rank must be tuned): one-way ANOVA across the levels with seeds as "
    "replicates (p < 0.05) and the largest contrast between level means at least the SESOI; "
    "contradicted when the 90% CI of the best-minus-worst seed-paired difference lies inside "
    "±SESOI. Sensitivity claims (DoRA less rank-sensitive) compare each seed's spread over the "
    "levels between the two arms as a direction claim.",
    "Runtime: at least 3 timing repeats per arm; the ratio of median train times with a 95% "
    "percentile bootstrap CI (scipy.stats.bootstrap): reproduced when the CI excludes 1 on the "
    "claimed side and the ratio differs from 1 by at least the declared share; contradicted when "
    "it excludes 1 on the other side. Not in the Holm family (the bootstrap gives no p-value).",
    "Memory: allocator peaks repeat to MBs, so one run per arm is judged, without a test, on the "
    "absolute difference against the declared margin (beyond it on the claimed side: reproduced; "
    "on the other side: contradicted; within: inconclusive; for 'same', within the margin "
    "reproduces). Repeats that spread by more than half the margin make it inconclusive. Memory "
    "is the training-phase peak; older records only have the whole-process peak (it includes "
    "scoring), and parts measured on it say so.",
    "Each at its best learning rate (F7's alpha_lr, F9, F14): each arm runs at the level of its "
    "grid with the lowest mean held-out NLL, chosen on the same seeds it is then compared on. "
    "An arm whose best level is its grid's first or last (a diverged level counts as part of "
    "the grid) might do better beyond it, so the verdict its doing better would overturn is "
    "withheld (inconclusive, with the reason): on held-out NLL, a reproduced when the reference "
    "arm is at an edge and a contradicted when the compared arm is; on any other metric, both.",
    "Best learning rate (F13): an arm's lr* is the argmin over the lr grid of the seed-mean "
    "held-out NLL, refined by the parabola in log10(lr) through the minimum and its neighbours "
    "when interior; a diverged run counts as worse than any finished one. Intervals are paired "
    "Student-t over seeds of the single-seed optima's log10 differences (each arm's own "
    "percentile bootstrap interval is descriptive only). The ratio lr*_LoRA / lr*_full is "
    "reproduced when its 95% interval (in log10) lies inside the declared band, contradicted "
    "when entirely outside; the best lr is flat over ranks when every pair of ranks' interval "
    "lies inside ± the declared margin, and contradicted when one lies entirely outside. An "
    "optimum on the grid's edge is inconclusive. No p-value: not in the Holm family.",
    "Multiplicity: within a finding, the p-values of its judged tested parts are Holm-adjusted "
    "(separately for the claim and for the opposite), and each part is decided at 0.05 on the "
    "adjusted values; the Holm family size is printed with each finding. Context parts are "
    "tested unadjusted and never enter a verdict. Across findings there is no adjustment: each "
    "finding is its own family.",
    "A finding's verdict comes from the combine rule declared with its claim (e.g. F2 = memory "
    "AND time AND quality): every group must be reproduced; a contradicted group contradicts the "
    "finding; anything else is inconclusive (marked underpowered when a judged part was).",
    "Every tested part prints Δ, its CI, Δ/σ_seed (σ_seed pooled over the seeds of the two arms; "
    "the F1 seeds sweep's σ when the arms have no repeats) and Δ as a share of the base -> tuned "
    "change of the reference arm where the records have a base score.",
    "Verdicts judge the claims on this model; the published magnitudes are shown beside the "
    "measured effects. Only `ok` runs enter effects; failed, oom, diverged, skipped, pruned and "
    "lost runs are listed per sweep.",
]

PART_HEAD = ["part", "published", "reference", "compared", "Δ", "CI", "Δ/σ_seed", "Δ/gain",
             "margin", "p (claim / opposite)", "verdict", "rule"]


def sweep_specs(paths: list[Path]) -> dict[str, dict]:
    """Each sweep's plan file under the given dirs, by sweep name (what was planned). A sweep
    extended by a study of its own (the same sweep over new levels, e.g. a higher lr) has a plan
    file per study: the first one's space, and ``planned`` summed over the studies."""
    specs: dict[str, dict] = {}
    studies: dict[str, set] = {}
    for path in paths:
        for spec_file in sorted(path.rglob(PLAN_NAME)) if path.is_dir() else []:
            try:
                spec = json.loads(spec_file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if not isinstance(spec, dict) or not spec.get("name"):
                continue
            name, study = spec["name"], spec.get("study")
            if name not in specs:
                specs[name], studies[name] = dict(spec), {study}
            elif study not in studies[name] and isinstance(spec.get("planned"), int) and \
                    isinstance(specs[name].get("planned"), int):
                studies[name].add(study)
                specs[name]["planned"] += spec["planned"]
    return specs


def unrecorded_points(runs: pd.DataFrame, spec: dict) -> list[str]:
    """Grid points of the sweep's plan with no record at all (e.g. killed while running)."""
    space = spec.get("space") or {}
    if spec.get("sampler", "grid") != "grid" or not space or \
            not all(isinstance(v, list) for v in space.values()):
        return []
    names = list(space)
    recorded = {tuple(level(r.get(PARAM + a)) for a in names) for _, r in runs.iterrows()}
    planned = itertools.product(*[[level(v) for v in space[a]] for a in names])
    return [config_label(names, p) for p in planned if p not in recorded]


def error_line(row: pd.Series) -> str:
    """The first line of a run's error, without machine paths."""
    error = row.get("error")
    if error is None or (isinstance(error, float) and math.isnan(error)):
        return "-"
    return scrub(str(error).strip().splitlines()[0])[:200]


def status_counts(runs: pd.DataFrame) -> str:
    """'5 ok, 1 failed'."""
    counts = normalize(runs)["status"].fillna("unknown").value_counts()
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def mean_text(rows: pd.DataFrame, metric: str, digits: int = 4) -> str:
    """Mean (± std with repeats) of a metric over rows."""
    vals = values(rows, metric)
    if not vals:
        return "-"
    return fmt(sum(vals) / len(vals), digits) + (f" ± {fmt(std(vals), 2)}" if len(vals) > 1 else "")


TABLE_COLUMNS = (  # (header, column, digits)
    ("train peak GiB", MEMORY, 4), ("train peak GB", MEMORY_GB, 4), ("est. GiB", ESTIMATE_GIB, 4),
    ("train s", TRAIN_SECONDS, 4), ("tokens/s", "tokens_per_s", 5), ("held-out NLL", NLL, 5),
    ("NLL vs base", "eval_delta.harness_heldout.token_nll", 3), ("NLL 4-bit in-process", QUANT_NLL, 5),
    ("agreement margin", AGREE, 3), ("capitals margin", CAPITALS, 3), ("add1d log-prob", ADD1D, 3),
    ("add1d acc", ADD1D_ACC, 3), ("2ds acc", ARITH_ACCS[0], 3), ("4ds acc", ARITH_ACCS[1], 3),
    ("2ds ppl", ARITH_2DS_PPL, 4),
)


def configuration_table(runs: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """One row per configuration of ok runs: the measured columns the verdicts use (columns
    nobody measured are left out)."""
    runs = normalize(runs)
    names = axes(runs)
    groups = cells(runs)
    head = ["configuration", "seeds", "runs", *[h for h, _, _ in TABLE_COLUMNS], "trainable params"]
    rows = []
    for key in sorted(groups, key=lambda k: [level_sort_key(x) for x in k]):
        g = groups[key]
        seeds = ", ".join(sorted(set(g["run_seed"]), key=level_sort_key))
        params = values(g, "trainable_params")
        rows.append([config_label(names, key), seeds or "-", str(len(g)),
                     *[mean_text(g, c, d) for _, c, d in TABLE_COLUMNS],
                     f"{int(params[0]):,}" if params else "-"])
    keep = [i for i in range(len(head)) if i < 3 or any(r[i] != "-" for r in rows)]
    return [head[i] for i in keep], [[r[i] for i in keep] for r in rows]


def not_ok_table(runs: pd.DataFrame) -> list[list[str]]:
    """Every run that did not finish ok: trial, seed, configuration, status, error."""
    runs = normalize(runs)
    names = axes(runs)
    bad = runs[runs["status"] != "ok"]
    return [[level(r.get("sweep.trial")), level(r.get("run_seed")),
             config_label(names, config_key(r, names)), str(r.get("status")), error_line(r)]
            for _, r in bad.iterrows()]


def part_rows(parts: list[PartResult]) -> list[list[str]]:
    """Report table rows for measured parts."""
    rows = []
    for p in parts:
        detail = p.rule if p.verdict != stats.NOT_MEASURED else f"not measured: {p.rule}"
        if p.pairs:
            detail += "; " + "; ".join(p.pairs)
        label = p.label + ("" if p.group else " (context)")
        rows.append([label, p.published or "-", p.reference, p.other, p.effect, p.interval,
                     p.per_sigma, p.per_gain, p.threshold, p.p, f"**{p.verdict}**", detail])
    return rows


def headline(verdict: str, parts: list[PartResult]) -> list[str]:
    """The summary's effect and seed count: the first tested part whose verdict is the finding's
    (the one that decided it), else the first tested part. Seeds are per arm; a part judged
    without seeds (a deterministic memory rule) says so."""
    tested = [p for p in parts if p.group and p.verdict != stats.NOT_MEASURED]
    deciding = [p for p in tested if p.verdict == verdict] or tested
    if not deciding:
        return ["-", "-"]
    part = deciding[0]
    per_seed = sum(pair.startswith("seed ") for pair in part.pairs)
    n = per_seed or (part.test.interval.n if part.test is not None else 0)
    effect = part.effect if part.effect != "-" else part.other
    interval = "" if part.interval == "-" else f" ({part.interval})"
    return [f"{part.label}: {effect}{interval}", str(n) if n else "none (deterministic rule)"]


def untested_reason(finding: str) -> str:
    """Why ``finding`` has no verdict here: the named sweeps that test it are not among the records."""
    needed = [name for name, claims in SWEEP_CLAIMS.items() if finding in claims]
    why = (f"its sweep{'s' if len(needed) > 1 else ''} {', '.join(f'`{n}`' for n in needed)} "
           f"{'are' if len(needed) > 1 else 'is'} not among the records" if needed else "no named sweep tests it")
    return f"{finding} ({CLAIMS[finding].title}): {why}"


def header_blocks(frame: pd.DataFrame, names: list[str], specs: dict[str, dict],
                  notes: list[str]) -> list[tuple]:
    """Title, provenance (devices, versions, models, counts) and the user's notes."""
    blocks: list[tuple] = [("h", 1, "Findings report: claim vs measurement")]
    facts = [f"Generated by `python -m harness.report` from {len(frame)} run records in "
             f"{len(names)} sweep(s): " + ", ".join(f"`{n}`" for n in names) + "."]
    for sweep in names:
        runs = sweep_runs(frame, sweep)
        planned = f" of {specs[sweep]['planned']} planned" if specs.get(sweep, {}).get("planned") else ""
        facts.append(f"`{sweep}`: {len(runs)} records{planned} ({status_counts(runs)}).")
    for col, what in (("device.name", "Devices"), ("config.model.name", "Models"),
                      ("sweep.scale", "Sweep scale"), ("train_peak_memory_kind", "Training peak kind"),
                      ("eval_protocol", "Scoring protocol"), ("versions.torch", "torch"),
                      ("git_sha", "Harness commit")):
        seen = sorted({str(v) for v in frame[col].dropna()}) if col in frame.columns else []
        if seen:
            facts.append(f"{what}: {', '.join(scrub(s) for s in seen)}.")
    # Only ok runs' memory is reported; a run stopped before training has no training-phase peak.
    if (frame.loc[frame["status"] == "ok", MEMORY_SOURCE] == WHOLE_PROCESS).any():
        facts.append("Some records predate the training-phase memory peak: their memory is the "
                     "whole-process peak (older record), which includes scoring.")
    if "sweep.scale" in frame.columns and (frame["sweep.scale"] == "smoke").any():
        facts.append("Smoke-scale records (a tiny model on a few examples): their verdicts check "
                     "the pipeline, not the findings.")
    blocks.append(("ul", facts))
    if notes:
        blocks += [("p", "**Notes.**"), ("ul", [scrub(n) for n in notes])]
    return blocks


def finding_blocks(finding: str, sweeps: list[str], result: tuple, frame: pd.DataFrame) -> list[tuple]:
    """One finding's section: claim, published numbers, parts table, notes, verdict."""
    verdict, rule, parts = result
    claim = CLAIMS[finding]
    blocks: list[tuple] = [("h", 3, f"{finding} {claim.title}: {verdict}")]
    items = [f"Claim: {claim.claim}", f"Published: {claim.published}",
             "Sweeps: " + ", ".join(f"`{s}`" for s in sweeps), f"Combine rule: {claim.rule}."]
    if claim.source_note:
        items.append(f"Sources disagree: {claim.source_note}")
    blocks += [("ul", items), ("table", PART_HEAD, part_rows(parts))]
    for note in finding_notes(finding, frame):
        blocks.append(("table", *note) if isinstance(note, tuple) else ("p", scrub(note)))
    blocks.append(("p", f"**Verdict: {verdict}**: {rule}."))
    return blocks


def sweep_blocks(frame: pd.DataFrame, sweep: str, spec: dict, out: Path) -> list[tuple]:
    """One sweep's section: configuration table, runs not ok, unrecorded points, plots."""
    runs = sweep_runs(frame, sweep)
    blocks: list[tuple] = [("h", 3, f"`{sweep}`")]
    if spec.get("description"):
        blocks.append(("p", scrub(spec["description"])))
    head, rows = configuration_table(runs)
    blocks.append(("p", "Ok runs, one row per configuration (mean ± std over seeds where repeated; "
                        "est. = the dry-run memory estimate)."))
    blocks.append(("table", head, rows) if rows else ("p", "No ok runs."))
    bad = not_ok_table(runs)
    if bad:
        blocks += [("p", f"Runs not ok ({len(bad)}), excluded from effects:"),
                   ("table", ["trial", "seed", "configuration", "status", "error"], bad)]
    missing = unrecorded_points(runs, spec)
    if missing:
        blocks.append(("p", f"Planned grid points with no record ({len(missing)}; their trials were "
                            "killed or lost before writing one): " + "; ".join(missing) + "."))
    for suffix, title, plot in PLOTS:
        figure = plot(runs)
        if figure is not None:
            figure.savefig(out / f"{sweep}_{suffix}.png", dpi=110, metadata={"Software": None})
            blocks.append(("img", f"{title} ({sweep})", f"{sweep}_{suffix}.png"))
    return blocks


def margins_table() -> tuple[list[str], list[list[str]]]:
    """Every declared part: its sweep, kind, metric, margin and group (one place: claims.py)."""
    rows = []
    for sweep, claims in SWEEP_CLAIMS.items():
        for finding, parts in claims.items():
            for part in parts:
                rows.append([finding, f"`{sweep}`", part.label, type(part).__name__, name(part.metric),
                             margin_text(part), part.group or "context"])
    rows.sort(key=lambda r: int(r[0][1:]))
    return ["finding", "sweep", "part", "kind", "metric", "margin", "group"], rows


def margin_text(part: Part) -> str:
    if isinstance(part, LRRatio):
        return f"log10 ratio {part.target:g} ± {part.margin:g}"
    if isinstance(part, LRSpread):
        return f"spread < {part.margin:g} decades"
    margin = getattr(part, "margin", None)
    if margin is None:
        return f"≤ {getattr(part, 'bound', '-')} GB"
    expect = getattr(part, "expect", "")
    return ("±" if expect == "same" else "") + fmt(margin, 3)


def build_report(paths: list[str | Path], out: Path | None = None,
                 notes: list[str] | None = None, html_too: bool = True) -> Path:
    """Load the records under ``paths``, write report.md (+ report.html, plots) into ``out``
    (default: ``report/`` inside the first path). Returns the report.md path.

    Raises FileNotFoundError for a missing path and ValueError when there are no records."""
    paths = [Path(p) for p in paths]
    frame = load_records(*paths)
    if frame.empty:
        raise ValueError(f"no run records under {', '.join(map(str, paths))}")
    frame = normalize(frame)
    out = Path(out) if out is not None else (paths[0] if paths[0].is_dir() else paths[0].parent) / "report"
    covered = {n: findings_of(sweep_runs(frame, n), n) for n in sweep_names(frame)}
    names = sorted(covered, key=lambda n: (min([int(f[1:]) for f in covered[n]] or [99]), n))
    findings = sorted({f for fs in covered.values() for f in fs}, key=lambda f: int(f[1:]))
    specs = sweep_specs(paths)
    seed_stds = seed_spread_for(frame)
    evaluated = {f: evaluate_finding(f, frame, seed_stds) for f in findings}
    sweeps_of = {f: [n for n in names if f in covered[n]] for f in findings}

    blocks = header_blocks(frame, names, specs, notes or []) + [("h", 2, "Summary")]
    if evaluated:
        blocks.append(("table", ["finding", "claim", "sweeps", "verdict", "deciding part: effect (interval)",
                                 "seeds", "rule"],
                       [[f"{f} {CLAIMS[f].title}", CLAIMS[f].claim, ", ".join(f"`{s}`" for s in sweeps_of[f]),
                         f"**{v}**", *headline(v, parts), rule]
                        for f, (v, rule, parts) in evaluated.items()]))
    else:
        blocks.append(("p", "These sweeps test none of the findings (no named sweep of FINDINGS.md)."))
    untested = [f for f in CLAIMS if f not in evaluated]
    blocks.append(("p", "Not tested by these sweeps: " + "; ".join(untested_reason(f) for f in untested) + "."
                   if untested else "Every finding is tested."))
    blocks.append(("h", 2, "Findings"))
    for f, result in evaluated.items():
        blocks += finding_blocks(f, sweeps_of[f], result, frame)
    blocks.append(("h", 2, "Sweeps"))
    out.mkdir(parents=True, exist_ok=True)
    for sweep in names:
        blocks += sweep_blocks(frame, sweep, specs.get(sweep, {}), out)
    blocks += [("h", 2, "Verdict rules"), ("ul", RULES_TEXT),
               ("p", "Declared parts and margins (all in `harness/report/claims.py`):"),
               ("table", *margins_table())]
    report_md = out / "report.md"
    report_md.write_text(markdown(blocks))
    if html_too:
        (out / "report.html").write_text(to_html(blocks, "Findings report"))
    return report_md
