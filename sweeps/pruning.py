"""The study's pruner inside a trial: a Lightning callback the driver names (``_target_``) in the
trial's ``HARNESS_TRIAL`` when the study prunes; :func:`harness.trial.trial_callbacks` builds it
in the trial process, so the run itself never imports the sweep package."""

from __future__ import annotations

import lightning as L
import optuna

from harness.trial import PrunedError

from .study import open_storage


class PruningReporter(L.Callback):
    """After every validation pass: report val loss at the optimizer step, ask the pruner."""

    def __init__(self, storage: str, study_name: str, trial_id: int):
        self.study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
        self.trial = optuna.Trial(self.study, trial_id)

    def on_validation_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get("val_loss")
        if value is None or trainer.sanity_checking:
            return
        self.trial.report(float(value), step=trainer.global_step)
        if trainer.global_step > 0 and self.trial.should_prune():
            raise PrunedError(f"pruned by the study's pruner at optimizer step {trainer.global_step} (val loss {float(value):.4f})")
