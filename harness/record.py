"""The run record: one self-describing ``record.json`` per run, written atomically.

:class:`RunRecord` is its type. Its declared fields are the keys every producer writes by
name (the training run, a packed trial, the sweep driver for a trial that left no record);
the measurements other modules compute (:mod:`harness.measure`'s peaks and throughput,
:mod:`harness.scoring`'s scores, how a run ended) stay in :attr:`RunRecord.extra` under their
own flat keys. :meth:`RunRecord.to_json` gives the flat JSON object ``record.json`` has always
held, keys in the order they have always come.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterator, Mapping, MutableMapping
from enum import Enum
from pathlib import Path
from typing import Any

from .paths import REPO_ROOT, atomic_write, package_version

RECORD_NAME = "record.json"
CHECKPOINT_DIR = "checkpoints"  # a run dir's checkpoints, where trainer.resume=auto looks
PACK_STATE = "pack_state.pt"  # a packed trial's state, saved when its pack stopped (harness.pack_state)
PACKAGES = ("torch", "transformers", "peft", "lightning", "bitsandbytes", "hydra-core", "optuna", "lm-eval", "harness")


class Status(str, Enum):
    """How a run ended: the record's ``status``."""

    ok = "ok"
    oom = "oom"
    diverged = "diverged"
    pruned = "pruned"
    failed = "failed"
    skipped = "skipped"  # not run: its dry-run estimate exceeded sweep.gpu_memory_budget
    interrupted = "interrupted"  # SIGTERM/SIGINT: not a result; the trial runs again from its checkpoint

    def __str__(self) -> str:
        return self.value


STATUSES = tuple(s.value for s in Status)


class RecordWriteError(OSError):
    """The run record could not be written (disk full, read-only, quota)."""


class _Unset:
    """A field the record does not have (``None`` is a value the record writes as null)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _field() -> Any:
    return dataclasses.field(default=UNSET)


@dataclasses.dataclass
class SweepInfo:
    """The record's ``sweep`` block: which sweep trial a run is and how the sweep ran it. The
    driver hands it to the trial (in ``HARNESS_TRIAL``), and the trial writes it in its record."""

    name: str
    finding: str | None
    study: str
    storage: str
    scale: str
    trial: int
    params: dict
    seed: int | None
    seeds: list
    launcher: str
    gpu: str | None
    trials_per_gpu: int
    exclusive_gpu: bool
    concurrent_trials: int
    seeds_together: bool
    concurrent_runs: int
    pack: bool

    def to_json(self) -> dict:
        """The block as the record holds it."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(eq=False)
class RunRecord(MutableMapping):
    """One run's record. Fields left :data:`UNSET` are not in the JSON; ``None`` is written as
    null. Item access (``record["status"]``) reads and sets declared fields and :attr:`extra`
    alike, so the record reads as the flat JSON object it is written as. Setting an unknown
    ``status`` raises ValueError: no record with one is ever written."""

    status: str  # a Status value
    config: dict = _field()  # the resolved config that ran (after CPU sizing)
    run_dir: str = _field()
    seed: int | None = _field()
    device: dict = _field()
    precision: str = _field()
    versions: dict = _field()
    git_sha: str | None = _field()
    data: dict = _field()  # data statistics: records recovered, dropped, split sizes
    planned_steps: int = _field()
    memory_estimate: dict = _field()  # the dry-run estimate
    schedule_note: str | None = _field()
    cpu_sizing: dict = _field()
    adapter_path: str | None = _field()
    model_path: str | None = _field()  # full fine-tuning
    error: str | None = _field()
    resumed_from: str | None = _field()
    resume_overrides: dict | None = _field()
    startup_seconds: float = _field()
    packed: bool = _field()  # a packed trial (harness.packing): its memory and runtime are its pack's
    pack_members: list = _field()
    pack_size: int = _field()
    pack_adapter: str = _field()
    pack_measures: str = _field()
    # joint: scored with the pack's other trials, one stacked forward per batch of requests
    # (harness.pack_scoring; the first of them holds the forwards' time in eval_seconds); alone:
    # some or all of its requests answered on its own
    pack_eval: str = _field()
    # joint: the most trials one stacked forward held when scoring ended (fewer than the group's
    # after a pass out of memory; batches before that stacked more)
    pack_eval_stack: int = _field()
    # a packed trial that went on from the state its last pack saved when stopped (harness.pack_state):
    # the optimizer step it went on from (its record's runtime is this pack's; its tokens, all its training's)
    pack_resumed_at_step: int = _field()
    # the pack's seconds from the start of training to the end of its first optimizer step (part
    # of train_seconds; under trainer.compile, most of it compiles the blocks and records graphs)
    pack_first_step_seconds: float = _field()
    trainable_params: int = _field()
    total_params: int = _field()
    setup_seconds: float = _field()
    eval_base: dict = _field()
    # Every other key, in the order it was set: peaks, timings and throughput (harness.measure),
    # scores (harness.scoring), how a run ended (signal, checkpoint, traceback, oom_in_training),
    # and the keys of older or newer records, which load and write back unchanged.
    extra: dict = dataclasses.field(default_factory=dict)
    # The fields below come after ``extra`` in the JSON: the losses are the last thing a run
    # measures, the rest is added around the training.
    optimizer_steps: int = _field()
    train_loss_first: float | None = _field()
    train_loss_last: float | None = _field()
    train_loss_best: float | None = _field()
    val_loss_first: float | None = _field()
    val_loss_last: float | None = _field()
    val_loss_best: float | None = _field()
    train_losses: list = _field()
    val_losses: list = _field()
    oom_retries: list = _field()  # trainer.oom_retry: each attempt
    log_tail: str = _field()  # a sweep trial that did not end ok: the tail of its output
    pack_log: str = _field()  # a packed trial's output: its pack's log
    sweep: dict = _field()  # a sweep trial: SweepInfo.to_json(), written by the trial itself
    pack_memory_estimate_gib: float = _field()

    def __setattr__(self, name: str, value) -> None:
        if name == "status" and value not in STATUSES:
            raise ValueError(f"status {value!r}: not a run status (one of {', '.join(STATUSES)})")
        super().__setattr__(name, value.value if isinstance(value, Status) else value)

    @classmethod
    def from_json(cls, data: Mapping) -> RunRecord:
        """The record a JSON object holds, of any producer or age (keys it does not declare go
        to :attr:`extra`). ValueError if its status is not one of :data:`STATUSES`."""
        record = cls(status=data.get("status"))
        for key, value in data.items():
            record[key] = value
        return record

    def to_json(self) -> dict:
        """The flat JSON object ``record.json`` holds: declared fields, :attr:`extra`, then the
        fields declared after it; unset fields left out."""
        head: dict = {}
        tail: dict = {}
        part = head
        for f in dataclasses.fields(self):
            if f.name == "extra":
                part = tail
            elif (value := getattr(self, f.name)) is not UNSET:
                part[f.name] = value
        return {**head, **self.extra, **tail}

    def __getitem__(self, key: str):
        if key not in _DECLARED:
            return self.extra[key]
        value = getattr(self, key)
        if value is UNSET:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value) -> None:
        if key in _DECLARED:
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __delitem__(self, key: str) -> None:
        if key == "status" or key not in self:  # a record always has a status
            raise KeyError(key)
        if key in _DECLARED:
            setattr(self, key, UNSET)
        else:
            del self.extra[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


_DECLARED = frozenset(f.name for f in dataclasses.fields(RunRecord)) - {"extra"}


def as_record(record: RunRecord | Mapping) -> RunRecord:
    """``record`` as a :class:`RunRecord` (a plain mapping is read with :meth:`RunRecord.from_json`)."""
    return record if isinstance(record, RunRecord) else RunRecord.from_json(record)


def write_record(run_dir: str | Path, record: RunRecord | Mapping) -> Path:
    """Write ``record.json`` atomically: readers never see half a record. A record whose status is
    not a :class:`Status` is refused (ValueError) before anything is written. A record that is not
    ok and gives no reason is written with one that says so: a failure never reads as null."""
    record = as_record(record)
    if record.status != Status.ok and not record.get("error"):
        record.error = (f"ended {record.status} with no reason recorded (a harness bug: please report it; "
                        "log_tail holds the run's last output)")
    data = finite(record.to_json())
    path = Path(run_dir) / RECORD_NAME
    try:
        return atomic_write(path, lambda f: json.dump(data, f, indent=2, default=str, allow_nan=False))
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


def read_record(run_dir: str | Path) -> RunRecord:
    """The record of a run dir. OSError if there is none; ValueError if it is not a run record
    (not JSON, not an object, no known status)."""
    with open(Path(run_dir) / RECORD_NAME) as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{Path(run_dir) / RECORD_NAME}: not a JSON object")
    return RunRecord.from_json(data)


def read_tail(path: str | Path, n: int = 4000) -> str:
    """The last ``n`` bytes of a log file as text ("" when it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - n))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
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
