"""A run that is one trial of a sweep: the trial's side of the contract with whoever launched it.

The sweep driver passes the trial in ``HARNESS_TRIAL`` (JSON: its record's ``sweep`` block, its
log file, and the callbacks the trial runs, such as the study's pruning reporter with the study
and trial it reports to, named by ``_target_``); a local driver also passes its process id in
``HARNESS_PARENT_PID`` (:func:`die_with_parent`). The run writes the sweep's part of its own
record (:func:`stamp`). Nothing here imports the sweep package: the driver names what the trial
runs, so dependencies go from ``sweeps`` to ``harness`` only.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

from .record import RunRecord, Status, read_tail

TRIAL_ENV = "HARNESS_TRIAL"
PARENT_ENV = "HARNESS_PARENT_PID"

log = logging.getLogger(__name__)


class PrunedError(Exception):
    """The study's pruner stopped this trial; the record says ``pruned``."""


def trial_info() -> dict:
    """This process's sweep trial as the driver passed it; empty for a run outside a sweep."""
    raw = os.environ.get(TRIAL_ENV)
    return json.loads(raw) if raw else {}


def trial_callbacks() -> list:
    """The Lightning callbacks the driver asks this trial to run (``callbacks``: ``_target_``
    entries, e.g. :class:`sweeps.pruning.PruningReporter` when the study prunes), else none."""
    specs = trial_info().get("callbacks") or []
    if not specs:
        return []
    from hydra.utils import instantiate

    return [instantiate(spec) for spec in specs]


def stamp(record: RunRecord, trial: dict) -> None:
    """What a sweep trial's record says of the sweep, set by the trial before it writes the
    record (the driver never rewrites it): ``trial["sweep"]`` as its ``sweep`` block and, for a
    run that did not end ok, ``log_tail``, the tail of its output (``trial["log"]``). The
    outcome is logged first, so the tail says how the run ended. ``trial``: :func:`trial_info`,
    or a packed trial's entry in its pack file; empty for a run outside a sweep."""
    if trial.get("sweep") is not None:
        record.sweep = trial["sweep"]
    if trial.get("log") and record.status != Status.ok:
        log.warning("run %s: %s", record.status, str(record.get("error") or "").strip().split("\n")[0])
        sys.stdout.flush()
        sys.stderr.flush()
        record.log_tail = read_tail(trial["log"])


def die_with_parent() -> None:
    """In a trial process started by a local driver: exit when the driver dies, so a killed
    driver never leaves a trial writing into a sweep that has moved on (Linux only)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the driver died before the line above took effect
        os._exit(1)
