"""What a sweep's records add up to: an objective's value read from a record, ``results.csv``
(one row per run, rebuilt from the records, with each trial's Optuna state and a row for each
record that went missing) and the table printed at the end.

Reads records only; the driver's one record writer is :func:`sweeps.driver.left_no_record`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from harness.paths import atomic_write
from harness.record import RECORD_NAME

from . import study as study_lib

if TYPE_CHECKING:
    from .plan import SweepPlan

RESULTS_NAME = "results.csv"
TABLE_COLUMNS = ("status", "peak_memory_gib", "train_seconds", "tokens_per_s", "val_loss_last")


def metric_value(record: Mapping, metric: str) -> float | None:
    """A record metric by dotted path; lm-eval entries give their ``value``."""
    node = record
    for part in metric.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, Mapping):
        node = node.get("value")
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return None
    return float(node)


def write_results(sweep_dir: Path, study: optuna.Study | None = None) -> Path | None:
    """Rebuild ``results.csv`` from the sweep's records (one row per run), with each trial's
    Optuna state when the study is given. Returns the path, or None when there is no record."""
    import pandas as pd

    from harness.results import PARAMS_ORDER, load_records

    trials_dir = sweep_dir / "trials"
    lost = lost_records(study, sweep_dir) if study is not None else []
    has_records = trials_dir.is_dir() and any(trials_dir.rglob(RECORD_NAME))
    if not has_records and not lost:
        return None
    frame = load_records(trials_dir) if has_records else pd.DataFrame()
    frame = frame.drop(columns=[PARAMS_ORDER], errors="ignore")  # the loader's, for the report: no record field
    if lost:  # a finished trial whose record is gone keeps its row, saying so
        frame = pd.concat([frame, pd.DataFrame(lost)], ignore_index=True)
    if study is not None and "sweep.trial" in frame.columns:
        frame["sweep.trial"] = rerun_trials(frame, study, sweep_dir)
        status = study_lib.status_of(study)
        states = {t.number: t.state.name if status(t) not in study_lib.UNCOUNTED else status(t)
                  for t in study.get_trials(deepcopy=False)}
        frame.insert(0, "trial_state", [states.get(int(n)) if n == n else None for n in frame["sweep.trial"]])
    first = [c for c in ("sweep.trial", "sweep.seed", "trial_state", "status") if c in frame.columns]
    params = sorted(c for c in frame.columns if c.startswith("sweep.params."))
    frame = frame[first + params + [c for c in frame.columns if c not in first and c not in params]]
    path = sweep_dir / RESULTS_NAME
    atomic_write(path, lambda f: frame.to_csv(f, index=False))
    return path


def rerun_trials(frame, study: optuna.Study, sweep_dir: Path) -> list:
    """Each row's trial: its record's, or the later trial that told the study its run dir. A
    re-run trial keeps the records of the seeds that had ended, and those name the trial that
    ran them (the driver does not rewrite a record); the table lists them under the re-run."""
    told: dict[Path, int] = {}
    for t in study.get_trials(deepcopy=False):
        for run_dir in t.user_attrs.get("run_dirs") or []:
            key = relocated(run_dir, sweep_dir).resolve()
            told[key] = max(t.number, told.get(key, t.number))
    paths = frame["record_path"] if "record_path" in frame.columns else [None] * len(frame)
    return [max(n, told.get(Path(path).parent.resolve(), n)) if isinstance(path, str) and n == n else n
            for path, n in zip(paths, frame["sweep.trial"], strict=True)]


def relocated(run_dir: str, sweep_dir: Path) -> Path:
    """A run dir the study stored, under ``sweep_dir`` when the sweep dir was moved or carried
    to another machine since (the study keeps absolute paths)."""
    path = Path(run_dir)
    if path.exists() or "trials" not in path.parts:
        return path
    start = len(path.parts) - 1 - path.parts[::-1].index("trials")
    return sweep_dir.joinpath(*path.parts[start:])


def lost_records(study: optuna.Study, sweep_dir: Path) -> list[dict]:
    """A row for each run of a finished trial whose record.json is gone (deleted, or a disk
    lost): the study still counts the configuration as done, so it is listed, not dropped."""
    rows = []
    status = study_lib.status_of(study)
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING or status(t) in study_lib.UNCOUNTED:
            continue
        for run_dir in t.user_attrs.get("run_dirs") or []:
            if (relocated(run_dir, sweep_dir) / RECORD_NAME).is_file():
                continue
            row = {"sweep.trial": t.number, "status": "lost", "run_dir": run_dir,
                   "error": f"record missing: {Path(run_dir) / RECORD_NAME} (trial {t.number} finished "
                            f"{t.user_attrs.get('status', t.state.name.lower())}; its record was removed)"}
            row.update({f"sweep.params.{k}": v for k, v in study_lib.trial_params(t).items()})
            for metric, summary in (t.user_attrs.get("objectives") or {}).items():
                row[metric] = summary.get("mean")
            rows.append(row)
    return rows


def results_table(plan: SweepPlan, sweep_dir: Path) -> str:
    """A compact text table of the sweep's runs: params, status, objectives, memory, time."""
    import pandas as pd

    frame = pd.read_csv(sweep_dir / RESULTS_NAME, keep_default_na=False, na_values=[""])
    cols = ["sweep.trial"] + (["sweep.seed"] if len(plan.seeds) > 1 else [])
    cols += [f"sweep.params.{a.key}" for a in plan.axes]
    cols += [c for c in TABLE_COLUMNS if c in frame.columns]
    for o in plan.cfg.objectives:
        if o.metric in frame.columns and o.metric not in cols:
            cols.append(o.metric)
    shown = frame[[c for c in cols if c in frame.columns]].rename(columns=lambda c: c.removeprefix("sweep.params.").removeprefix("sweep."))
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")
