"""sweep.retry_failed: after a fix, the failed trials of a sweep run again; nothing else does."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd

from sweeps import study as study_lib
from tests.helpers import run_cli, tiny


def sweep(chat_file, sweep_dir: Path, *extra: str):
    args = ["+sweep=custom", "+sweep.space.optimizer.lr=[1e-3]", "sweep.seeds=[1,2]", *tiny(chat_file, size=16),
            *extra, f"hydra.sweep.dir={sweep_dir}"]
    return run_cli(args, timeout=900)


def statuses(sweep_dir: Path) -> list[str]:
    return list(pd.read_csv(sweep_dir / "results.csv")["status"])


def test_failed_trials_run_again_from_the_start_only_when_asked(chat_file, tmp_path):
    sweep_dir = tmp_path / "sweep"
    # A crash at the first step stands for a bug: every run fails (fault.* is not part of the
    # sweep's identity, so the same sweep resumes without it, as after a fix).
    first = sweep(chat_file, sweep_dir, "fault.kind=crash", "fault.at_step=0")
    assert first.returncode == 0, first.stderr[-3000:]
    assert statuses(sweep_dir) == ["failed", "failed"]
    again = sweep(chat_file, sweep_dir)  # resuming finds the configuration done: failures are data
    assert again.returncode == 0, again.stderr[-3000:]
    assert statuses(sweep_dir) == ["failed", "failed"]

    retried = sweep(chat_file, sweep_dir, "sweep.retry_failed=true")
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert "trial(s) 0 run again from the start" in retried.stderr
    table = pd.read_csv(sweep_dir / "results.csv")
    assert list(table["status"]) == ["ok", "ok"] and sorted(table["sweep.seed"]) == [1, 2]
    for seed in (1, 2):  # in the failed trial's folder, its failed record kept beside the new one
        run_dir = sweep_dir / "trials" / "0" / f"seed_{seed}"
        assert json.loads((run_dir / "record.json").read_text())["status"] == "ok"
        failed = json.loads((run_dir / "record.failed-0.json").read_text())
        assert failed["status"] == "failed" and "injected crash" in failed["error"]
    study = optuna.load_study(study_name="custom", storage=study_lib.open_storage(study_lib.storage_url(None, sweep_dir)))
    by_status = {t.number: t.user_attrs.get("status") for t in study.trials}
    assert study.user_attrs[study_lib.RETRIED_ATTR] == [0] and by_status[0] == "failed"
    assert [study_lib.status_of(study)(t) for t in study.trials] == ["retried", "ok"]


class ScriptedLauncher:
    """Stands in for the trial processes to drive the driver's bookkeeping: each launch writes
    the record a real run would end with, per seed, as ``outcome(seed)`` says."""

    def __init__(self, outcome):
        self.outcome, self.calls, self.driver = outcome, [], None

    def run(self, cmd, env, cwd, log_path, beat):
        run_dir = Path(next(a for a in cmd if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        seed = int(next(a for a in cmd if a.startswith("seed=")).split("=")[1])
        status = self.outcome(seed)
        self.calls.append(seed)
        record = {"status": status, "run_dir": str(run_dir), "val_loss_last": 1.0 if status == "ok" else None,
                  "error": None if status == "ok" else f"{status} in this launch",
                  "sweep": json.loads(env["HARNESS_TRIAL"])["sweep"]}  # a run writes its own sweep block
        if status == "interrupted":
            self.driver.stop.set()  # Ctrl-C arrives while this seed runs
        (run_dir / "record.json").write_text(json.dumps(record))
        return 0


def test_a_retried_trial_interrupted_midway_never_keeps_a_failure_from_before_the_fix(chat_file, tmp_path):
    from sweeps.driver import Driver, make_sampler, plan_sweep
    from tests.helpers import compose_run

    user = tiny(chat_file, size=16)
    run = compose_run(["+sweep=custom", "+sweep.space.optimizer.lr=[1e-3]", "sweep.seeds=[1,2]", *user])
    plan = plan_sweep(run.sweep, user, tmp_path / "sweep")
    plan.slots = [None]
    plan.sweep_dir.mkdir(parents=True)
    study = study_lib.open_study(study_lib.open_storage(plan.storage_url), plan.study_name, plan.directions,
                                 make_sampler(plan), optuna.pruners.NopPruner(), plan.signature())

    def drive(outcome) -> list[int]:
        launcher = ScriptedLauncher(outcome)
        launcher.driver = Driver(plan, study, launcher, plan.slots)
        launcher.driver.worker(None)
        assert not launcher.driver.errors
        return launcher.calls

    assert drive(lambda seed: "failed") == [1, 2]  # the bug
    assert study_lib.retry_failed(study) == [0]
    assert study_lib.retry_failed(study) == []  # queued once, however often it is asked
    assert drive(lambda seed: "interrupted" if seed == 1 else "ok") == [1]  # the retry, stopped in seed 1
    assert drive(lambda seed: "ok") == [1, 2]  # resumed: seed 2's old failure was set aside, so it runs
    seed_2 = tmp_path / "sweep" / "trials" / "0" / "seed_2"
    assert json.loads((seed_2 / "record.json").read_text())["status"] == "ok"
    assert json.loads((seed_2 / "record.failed-0.json").read_text())["error"] == "failed in this launch"
    final = study.trials[-1]
    assert final.state == optuna.trial.TrialState.COMPLETE and final.user_attrs["status"] == "ok"
