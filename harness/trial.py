"""A run that is one trial of a sweep: reports validation loss to its Optuna trial so the
study's pruner can stop it early. The sweep driver passes the trial in ``HARNESS_TRIAL``."""

from __future__ import annotations

import json
import os

import lightning as L

TRIAL_ENV = "HARNESS_TRIAL"


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


def trial_callbacks() -> list[L.Callback]:
    """The pruning reporter when this process runs a trial whose study prunes, else nothing."""
    raw = os.environ.get(TRIAL_ENV)
    if not raw:
        return []
    info = json.loads(raw)
    if not info.get("prune"):
        return []
    return [PruningReporter(info["storage"], info["study_name"], int(info["trial_id"]))]
