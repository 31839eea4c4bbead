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
        failed = json.loads((run_dir / "record.failed.json").read_text())
        assert failed["status"] == "failed" and "injected crash" in failed["error"]
    study = optuna.load_study(study_name="custom", storage=study_lib.open_storage(study_lib.storage_url(None, sweep_dir)))
    by_status = {t.number: t.user_attrs.get("status") for t in study.trials}
    assert study.user_attrs[study_lib.RETRIED_ATTR] == [0] and by_status[0] == "failed"
    assert [study_lib.status_of(study)(t) for t in study.trials] == ["retried", "ok"]
