"""A run that is one trial of a sweep. The sweep driver passes the trial in ``HARNESS_TRIAL``
(JSON: the study, the trial's id, whether it prunes, its record's ``sweep`` block and its log
file); the run reports validation loss to its Optuna trial so the study's pruner can stop it
early, and writes the sweep's part of its own record (:func:`stamp`)."""

from __future__ import annotations

import json
import logging
import os
import sys

import lightning as L

from .record import RunRecord, Status, read_tail

TRIAL_ENV = "HARNESS_TRIAL"

log = logging.getLogger(__name__)


class PrunedError(Exception):
    """The study's pruner stopped this trial; the record says ``pruned``."""


class PruningReporter(L.Callback):
    """After every validation pass: report val loss at the optimizer step, ask the pruner."""

    def __init__(self, storage: str, study_name: str, trial_id: int):
        import optuna

        from sweeps.study import open_storage

        self.study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
        self.trial = optuna.Trial(self.study, trial_id)

    def on_validation_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get("val_loss")
        if value is None or trainer.sanity_checking:
            return
        self.trial.report(float(value), step=trainer.global_step)
        if trainer.global_step > 0 and self.trial.should_prune():
            raise PrunedError(f"pruned by the study's pruner at optimizer step {trainer.global_step} (val loss {float(value):.4f})")


def trial_info() -> dict:
    """This process's sweep trial as the driver passed it; empty for a run outside a sweep."""
    raw = os.environ.get(TRIAL_ENV)
    return json.loads(raw) if raw else {}


def trial_callbacks() -> list[L.Callback]:
    """The pruning reporter when this process runs a trial whose study prunes, else nothing."""
    info = trial_info()
    if not info.get("prune"):
        return []
    return [PruningReporter(info["storage"], info["study_name"], int(info["trial_id"]))]


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
