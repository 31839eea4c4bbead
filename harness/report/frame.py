"""The DataFrame vocabulary of the report: levels, axes, seeds, ok runs and configuration means
over the loader's frame (:func:`harness.results.load_records`, one row per run record).

:func:`normalize` adds the derived columns every measurement reads (the training-phase memory
peak with its fallback, decimal GB, the run's seed), so older records and new ones read alike.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from ..results import PARAMS_ORDER

PARAM = "sweep.params."
SEED = "run_seed"  # derived: the run's seed (sweep.seed, else the record's seed)
MEMORY = "train_peak_memory_gib"  # training-phase peak (GiB); older records: the process peak
MEMORY_GB = "train_peak_gpu_allocated_gb"  # the study's unit: allocated, decimal GB
MEMORY_SOURCE = "memory_source"  # derived: which record field the memory columns came from
WHOLE_PROCESS = "whole-process peak (older record)"
TRAINING_PHASE = "training-phase peak"
GIB_PER_GB = 1e9 / 2**30
# Record fields that in a packed trial's record (harness.packing) measure the whole pack.
PACKED_MEASURES = (MEMORY, MEMORY_GB, "peak_memory_gib", "peak_gpu_allocated_gb", "peak_gpu_allocated_gib",
                   "peak_gpu_reserved_gib", "peak_rss_gib", "train_seconds", "total_seconds", "tokens_per_s", "mfu")


def level(value) -> str:
    """One spelling per level: 8, 8.0 and '8' are all '8'; 1e-4 and '1e-4' are '0.0001';
    missing is '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, (int, float, np.integer, np.floating)):
        value = float(value)
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return str(value)


def level_sort_key(text: str):
    """Numeric levels in numeric order, then the rest alphabetically."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def numbers(series: pd.Series) -> pd.Series:
    """A column as floats (non-numbers become NaN)."""
    return pd.to_numeric(series, errors="coerce")


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column, all-NaN when the records lack it."""
    if name in frame.columns:
        return numbers(frame[name])
    return pd.Series(np.nan, index=frame.index, dtype=float)


def flags(series: pd.Series) -> pd.Series:
    """A record flag as booleans: True as the records hold it (a bool, or its text once flattened)."""
    return series.map(lambda v: v is True or v in ("True", "true", 1))


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with the derived columns (idempotent): ``run_seed``, the memory peaks with
    their fallback for older records (``peak_memory_gib``, the whole-process peak including
    scoring) and where each came from, and a ``status`` of ok where records have none."""
    if SEED in frame.columns:
        return frame
    frame = frame.copy()
    if "status" not in frame.columns:
        frame["status"] = "ok"
    seed = column(frame, "sweep.seed")
    for fallback in ("seed", "config.seed"):
        seed = seed.fillna(column(frame, fallback))
    frame[SEED] = seed.map(level)
    if "packed" in frame.columns:  # a packed trial's memory and runtime are its pack's: no verdict reads them
        packed = flags(frame["packed"])
        for name in PACKED_MEASURES:
            if name in frame.columns:
                frame.loc[packed, name] = np.nan
    train = column(frame, MEMORY)
    frame[MEMORY_SOURCE] = np.where(train.notna(), TRAINING_PHASE,
                                    np.where(column(frame, "peak_memory_gib").notna(), WHOLE_PROCESS, "-"))
    frame[MEMORY] = train.fillna(column(frame, "peak_memory_gib"))
    gb = column(frame, MEMORY_GB)
    gb = gb.where(train.notna() | gb.notna(), column(frame, "peak_gpu_allocated_gb"))
    frame[MEMORY_GB] = gb.fillna(frame[MEMORY] * GIB_PER_GB)
    return frame


def sweep_names(frame: pd.DataFrame) -> list[str]:
    """The sweeps in the frame, in first-seen order; runs outside a sweep are 'single_runs'."""
    if "sweep.name" not in frame.columns:
        return ["single_runs"]
    return list(dict.fromkeys(frame["sweep.name"].fillna("single_runs")))


def sweep_runs(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of one sweep (all statuses), normalized."""
    frame = normalize(frame)
    if "sweep.name" not in frame.columns:
        return frame
    return frame[frame["sweep.name"].fillna("single_runs") == name]


def axes(runs: pd.DataFrame) -> list[str]:
    """The swept axes of these runs (``sweep.params.`` keys), the seed axis excluded: runs that
    differ only in seed are repeats of one configuration."""
    names = [c[len(PARAM):] for c in runs.columns
             if c.startswith(PARAM) and c != PARAM + "seed" and runs[c].notna().any()]
    orders = runs[PARAMS_ORDER].dropna() if PARAMS_ORDER in runs.columns else ()
    if len(orders):  # the sweep's own order: the frame's column order depends on the other sweeps loaded
        order = json.loads(orders.iloc[0])
        names.sort(key=lambda a: order.index(a) if a in order else len(order))
    return names


def ok_runs(runs: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Runs with status ok (and a finite ``metric`` when one is named)."""
    runs = normalize(runs)
    ok = runs[runs["status"] == "ok"]
    if metric is not None:
        ok = ok[column(ok, metric).notna()]
    return ok


def levels_of(runs: pd.DataFrame, axis: str) -> pd.Series:
    """Each run's level on ``axis`` ('-' where it has none)."""
    if PARAM + axis not in runs.columns:
        return pd.Series("-", index=runs.index)
    raw = runs[PARAM + axis]
    spelled = {v: level(v) for v in raw.dropna().unique()}
    return raw.map(spelled).fillna("-")


def select(runs: pd.DataFrame, pins: tuple[tuple[str, str], ...]) -> pd.DataFrame:
    """The runs at the given (axis, level) pins."""
    mask = pd.Series(True, index=runs.index)
    for axis, value in pins:
        mask &= levels_of(runs, axis) == level(value)
    return runs[mask]


def config_key(row: pd.Series, names: list[str]) -> tuple[str, ...]:
    """A run's levels on the named axes."""
    return tuple(level(row.get(PARAM + a)) for a in names)


def short_label(key: tuple[str, ...]) -> str:
    """'8/2' for plot annotations; the axis names go in the plot's caption."""
    return "/".join(key) if key else "default"


def label_caption(names: list[str]) -> str:
    """What the points' short labels are: 'labels: r/alpha_over_r'."""
    return "labels: " + "/".join(a.split(".")[-1] for a in names) if names else ""


def config_label(names: list[str], key: tuple[str, ...]) -> str:
    """'r=8, alpha_over_r=2' for display (axis names shortened to their last part)."""
    if not names:
        return "default"
    return ", ".join(f"{a.split('.')[-1]}={v}" for a, v in zip(names, key, strict=True))


def values(rows: pd.DataFrame, name: str) -> list[float]:
    """The finite numbers of one column."""
    if name not in rows.columns:
        return []
    return [float(v) for v in numbers(rows[name]) if pd.notna(v)]


def cells(runs: pd.DataFrame, metric: str | None = None) -> dict[tuple[str, ...], pd.DataFrame]:
    """Ok runs (with ``metric`` when one is named) grouped by configuration (their levels on every axis)."""
    names = axes(runs)
    ok = ok_runs(runs, metric)
    keys = [config_key(row, names) for _, row in ok.iterrows()]
    grouped: dict[tuple[str, ...], list] = {}
    for index, key in zip(ok.index, keys, strict=True):
        grouped.setdefault(key, []).append(index)
    return {key: ok.loc[idx] for key, idx in grouped.items()}


def std(vals: list[float]) -> float:
    """Sample standard deviation (0 for fewer than 2 values, and exactly 0 for equal values,
    where numpy's mean rounds and leaves about 1e-16: a report printed "2.7 ± 5.44e-16")."""
    if len(vals) < 2 or max(vals) == min(vals):
        return 0.0
    return float(np.std(vals, ddof=1))


def config_means(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per configuration of ok runs: its label, its levels, and the mean (and std over
    seeds) of each metric."""
    names = axes(runs)
    rows = []
    by_config = cells(runs)
    for key in sorted(by_config, key=lambda k: [level_sort_key(x) for x in k]):
        group = by_config[key]
        row = {"label": config_label(names, key), "short": short_label(key), "runs": len(group),
               **dict(zip(names, key, strict=True))}
        for metric in metrics:
            vals = values(group, metric)
            row[metric] = float(np.mean(vals)) if vals else math.nan
            row[metric + ".std"] = std(vals) if len(vals) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def score_metric(runs: pd.DataFrame, candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` some ok run has."""
    for metric in candidates:
        if len(ok_runs(runs, metric)):
            return metric
    return None


def base_of(metric: str) -> str:
    """The untrained base model's column for an ``eval.`` metric."""
    return "eval_base." + metric[len("eval."):]
