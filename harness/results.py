"""The one loader: run records (single runs or whole sweep dirs) -> a pandas DataFrame.

Everything downstream (a sweep's results.csv, the report, the notebooks) reads records only
through :func:`load_records`; nothing parses logs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import RecordError
from .record import RECORD_NAME, STATUSES, RunRecord

PARAMS_ORDER = "sweep.params_order"  # derived column: a sweep run's axes in its sweep's order (JSON list)

# Per-step curves stay in the records; a table row keeps their summaries.
CURVES = ("train_losses", "val_losses")


def load_record(path: str | Path) -> RunRecord:
    """One record.json as a :class:`harness.record.RunRecord`, checked: a JSON object with a known
    ``status`` (a record without one never counts as ok). Raises :class:`RecordError` naming the file."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: not a readable run record ({exc})") from None
    if not isinstance(record, dict):
        raise RecordError(f"{path}: not a run record (a JSON object expected, got {type(record).__name__})")
    if record.get("status") not in STATUSES:
        raise RecordError(f"{path}: not a run record (status {record.get('status')!r}, expected one of {', '.join(STATUSES)})")
    return RunRecord.from_json(record)


def find_records(*paths: str | Path) -> list[Path]:
    """Every record.json under ``paths`` (a run dir, a sweep dir, or a record file)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file() and path.name == RECORD_NAME:
            found.append(path)
        elif path.is_dir():
            found += sorted(path.rglob(RECORD_NAME))
        else:
            raise FileNotFoundError(f"{path}: no such run or sweep directory")
    return found


def extracted(path: str | Path, work: str | Path) -> Path:
    """A sweep or run dir as given, or the contents of its ``.tgz`` archive unpacked into ``work``:
    the archive's one top folder (``tar czf NAME.tgz -C outputs/sweeps NAME``), else ``work``."""
    import tarfile

    path, work = Path(path), Path(work)
    if not (path.is_file() and path.name.endswith((".tgz", ".tar.gz"))):
        return path
    work.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(path) as archive:
            archive.extractall(work, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise FileNotFoundError(f"{path}: not a readable archive ({exc})") from None
    tops = list(work.iterdir())
    return tops[0] if len(tops) == 1 and tops[0].is_dir() else work


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One flat row: nested keys joined with dots; lm-eval ``{value, stderr}`` pairs become
    ``...metric`` and ``...metric.stderr``; lists become JSON strings; curves are dropped."""
    row: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"value", "stderr"}:
                row[prefix] = node["value"]
                row[f"{prefix}.stderr"] = node["stderr"]
                return
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, (list, tuple)):
            row[prefix] = json.dumps(node, default=str)
        else:
            row[prefix] = node

    walk("", {k: v for k, v in record.items() if k not in CURVES})
    return row


def load_records(*paths: str | Path):
    """A DataFrame with one row per run record found under ``paths``, sorted by sweep trial
    and seed where the runs belong to a sweep. ``record_path`` says where each row came from;
    ``sweep.params_order`` (JSON) lists a sweep run's axes in its sweep's order."""
    import pandas as pd

    rows = []
    for path in find_records(*paths):
        record = load_record(path).to_json()
        row = flatten(record)
        row["record_path"] = str(path)
        params = (record.get("sweep") or {}).get("params")
        if isinstance(params, dict):  # the sweep's own axis order (the frame's columns mix sweeps)
            row[PARAMS_ORDER] = json.dumps(list(params))
        rows.append(row)
    frame = pd.DataFrame(rows)
    sort = [c for c in ("sweep.trial", "sweep.seed", "record_path") if c in frame.columns]
    return frame.sort_values(sort, kind="stable").reset_index(drop=True) if sort else frame
