"""The run record: one self-describing ``record.json`` per run, written atomically."""

from __future__ import annotations

import json
import math
import platform
import subprocess
from pathlib import Path

from .paths import REPO_ROOT, atomic_write, package_version

RECORD_NAME = "record.json"
STATUSES = ("ok", "oom", "diverged", "pruned", "failed", "skipped", "interrupted")
PACKAGES = ("torch", "transformers", "peft", "lightning", "bitsandbytes", "hydra-core", "optuna", "lm-eval", "harness")


class RecordWriteError(OSError):
    """The run record could not be written (disk full, read-only, quota)."""


def write_record(run_dir: str | Path, record: dict) -> Path:
    """Write ``record.json`` atomically: readers never see half a record."""
    assert record.get("status") in STATUSES, record.get("status")
    path = Path(run_dir) / RECORD_NAME
    try:
        return atomic_write(path, lambda f: json.dump(finite(record), f, indent=2, default=str, allow_nan=False))
    except OSError as exc:  # full disk, quota, read-only mount: the old record (if any) stays whole
        raise RecordWriteError(f"{path}: could not write the run record ({exc.strerror or exc})") from exc


def finite(value):
    """``value`` with every non-finite float (a diverged loss, an undefined metric) as None: the
    record is strict JSON, which ``Infinity`` and ``NaN`` are not."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def read_record(run_dir: str | Path) -> dict:
    """The record of a run dir."""
    with open(Path(run_dir) / RECORD_NAME) as handle:
        return json.load(handle)


def versions() -> dict:
    out = {name: package_version(name) for name in PACKAGES}
    out["python"] = platform.python_version()
    return out


def archived_sha() -> str | None:
    """The commit ``git archive`` wrote into ``harness/COMMIT`` (export-subst), with ``-archive``:
    the source came from that commit's archive, whose later edits git cannot see."""
    try:
        text = (Path(__file__).parent / "COMMIT").read_text().strip()
    except OSError:
        return None
    return f"{text}-archive" if len(text) == 40 and all(c in "0123456789abcdef" for c in text) else None


def git_sha() -> str | None:
    """The harness checkout's commit, with ``-dirty`` when it has uncommitted changes; in a
    ``git archive`` copy without ``.git``, the archived commit (:func:`archived_sha`)."""
    try:
        sha = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return archived_sha()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):  # no git program (a bare GPU image)
        return archived_sha()


def loss_summary(losses: list[float], prefix: str) -> dict:
    """first/last/best of a loss curve, under ``prefix`` (train or val)."""
    if not losses:
        return {f"{prefix}_loss_first": None, f"{prefix}_loss_last": None, f"{prefix}_loss_best": None}
    return {f"{prefix}_loss_first": losses[0], f"{prefix}_loss_last": losses[-1], f"{prefix}_loss_best": min(losses)}
