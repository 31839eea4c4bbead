"""The run record's type (harness.record.RunRecord) and its one writer per record: a sweep
trial writes its own record, sweep block included; the driver writes only the record of a
trial whose process left none, and never rewrites one a run wrote."""

from __future__ import annotations

import ast
import json
import tarfile
from pathlib import Path

import optuna
import pandas as pd
import pytest

from harness.paths import REPO_ROOT
from harness.record import STATUSES, RunRecord, Status, write_record
from harness.results import load_record, load_records
from harness.trial import TRIAL_ENV, stamp
from sweeps import study as study_lib
from tests.helpers import compose_run, tiny

ARCHIVES = sorted((REPO_ROOT / "docs" / "findings" / "records").glob("*.tgz"))


def test_every_status_is_defined_once_and_an_unknown_one_is_never_written(tmp_path):
    assert STATUSES == tuple(s.value for s in Status)
    with pytest.raises(ValueError, match="not a run status"):
        RunRecord(status="crashed")
    record = RunRecord(status=Status.ok)
    assert record.status == "ok" and json.dumps(record.to_json()) == '{"status": "ok"}'
    with pytest.raises(ValueError, match="not a run status"):
        record["status"] = "done"
    with pytest.raises(ValueError, match="not a run status"):
        write_record(tmp_path, {"status": "finished", "run_dir": str(tmp_path)})
    assert not (tmp_path / "record.json").exists()


def test_the_record_reads_and_writes_as_the_flat_object_it_always_was(tmp_path):
    record = RunRecord(status="failed", config={"seed": 1}, run_dir=str(tmp_path), seed=1, error=None)
    record.update(trainable_params=10, total_params=100, eval_base={"t": {"acc": {"value": 1, "stderr": 0}}})
    record["peak_rss_gib"] = 1.5  # a measurement: kept under its own key, after the declared head
    record.update(status="ok", train_losses=[2.0, float("nan")], sweep={"trial": 3})
    assert record["peak_rss_gib"] == 1.5 and record.get("log_tail") is None and "model_path" not in record
    assert list(record) == ["status", "config", "run_dir", "seed", "error", "trainable_params", "total_params",
                            "eval_base", "peak_rss_gib", "train_losses", "sweep"]
    write_record(tmp_path, record)
    loaded = load_record(tmp_path / "record.json")
    assert isinstance(loaded, RunRecord) and loaded.sweep == {"trial": 3} and loaded.train_losses == [2.0, None]
    assert list(json.loads((tmp_path / "record.json").read_text())) == list(record)


def test_a_record_that_is_not_ok_is_never_written_without_a_reason(tmp_path):
    # A GPU trial once wrote ``failed`` with a null error; the writer now says there is no reason.
    for status in ("failed", "oom", "interrupted"):
        write_record(tmp_path, RunRecord(status=status, error=None))
        assert "no reason recorded" in load_record(tmp_path / "record.json")["error"]
    write_record(tmp_path, RunRecord(status="oom", error="CUDA out of memory"))
    assert load_record(tmp_path / "record.json")["error"] == "CUDA out of memory"
    write_record(tmp_path, RunRecord(status="ok"))
    assert "error" not in json.loads((tmp_path / "record.json").read_text())


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda p: p.stem)
def test_every_committed_record_loads_through_the_type_unchanged(archive, tmp_path):
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    paths = sorted(tmp_path.rglob("record.json"))
    assert paths
    for path in paths:
        raw = json.loads(path.read_text())
        record = load_record(path)
        assert record.to_json() == raw and list(record.to_json()) == list(raw)  # same keys, same order
        assert record.status in STATUSES and record.sweep["trial"] is not None
    assert len(load_records(tmp_path)) == len(paths)


# -- one writer per record ------------------------------------------------------------------------

def test_the_driver_source_writes_a_record_in_one_place_only():
    """The driver's only record write is left_no_record, called where no process wrote one."""
    tree = ast.parse((REPO_ROOT / "sweeps" / "driver.py").read_text())
    functions = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}

    def calling(name: str) -> set[str]:
        return {f for f, node in functions.items() for call in ast.walk(node)
                if isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", None)) == name}

    assert calling("write_record") == {"left_no_record"}
    assert calling("left_no_record") == {"trial_record", "skip_if_over_budget"}


class TrialLauncher:
    """Stands in for the trial processes: ``outcome(seed)`` is a status the trial writes its own
    record with (through the trial's own stamp, as harness.train does), or an exit code for a
    process that leaves no record. Keeps each record's bytes as its trial wrote them."""

    def __init__(self, outcome):
        self.outcome, self.written, self.driver = outcome, {}, None

    def run(self, cmd, env, cwd, log_path, beat):
        run_dir = Path(next(a for a in cmd if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        seed = int(next(a for a in cmd if a.startswith("seed=")).split("=")[1])
        got = self.outcome(seed)
        log_path.write_text(f"seed {seed}: {got}\n")
        if isinstance(got, int):
            return got
        if got == "interrupted":
            self.driver.stop.set()
        record = RunRecord(status=got, run_dir=str(run_dir), seed=seed, error=None if got == "ok" else got,
                           val_loss_last=1.0)
        stamp(record, json.loads(env[TRIAL_ENV]))
        write_record(run_dir, record)
        self.written[run_dir] = (run_dir / "record.json").read_bytes()
        return 0 if got == "ok" else 1


@pytest.fixture
def driven(chat_file, tmp_path, monkeypatch):
    """``drive(outcome)`` runs a worker of a two-seed sweep over ``TrialLauncher(outcome)``;
    ``writes`` lists the run dirs the driver wrote a record in."""
    from sweeps import driver as driver_lib

    user = tiny(chat_file, size=16)
    run = compose_run(["+sweep=custom", "+sweep.space.optimizer.lr=[1e-3]", "sweep.seeds=[1,2]", *user])
    plan = driver_lib.plan_sweep(run.sweep, user, tmp_path / "sweep")
    plan.slots = [None]
    plan.sweep_dir.mkdir(parents=True)
    study = study_lib.open_study(study_lib.open_storage(plan.storage_url), plan.study_name, plan.directions,
                                 driver_lib.make_sampler(plan), optuna.pruners.NopPruner(), plan.signature())
    writes: list[Path] = []
    real = driver_lib.write_record
    monkeypatch.setattr(driver_lib, "write_record", lambda run_dir, record: writes.append(Path(run_dir)) or real(run_dir, record))

    def drive(outcome) -> TrialLauncher:
        launcher = TrialLauncher(outcome)
        launcher.driver = driver_lib.Driver(plan, study, launcher, plan.slots)
        launcher.driver.worker(None)
        assert not launcher.driver.errors
        return launcher

    return drive, writes, plan, study


def test_a_trial_writes_its_record_and_the_driver_only_the_one_a_killed_trial_left_none_of(driven):
    drive, writes, plan, _ = driven
    launcher = drive(lambda seed: "ok" if seed == 1 else -9)
    seed_1, seed_2 = (plan.sweep_dir / "trials" / "0" / f"seed_{s}" for s in (1, 2))
    assert writes == [seed_2]  # the killed trial's record, and nothing else
    assert (seed_1 / "record.json").read_bytes() == launcher.written[seed_1]  # as the trial wrote it
    own, left = load_record(seed_1 / "record.json"), load_record(seed_2 / "record.json")
    assert own.sweep["trial"] == 0 and own.sweep["seed"] == 1 and own.sweep["name"] == "custom"
    assert left.status == "failed" and "killed by signal 9" in left.error and "seed 2: -9" in left.log_tail
    assert left.sweep == {**own.sweep, "seed": 2}  # the driver's record carries the same block


def test_a_rerun_keeps_a_finished_seed_record_untouched_and_lists_it_under_the_rerun(driven):
    drive, writes, plan, study = driven
    first = drive(lambda seed: "ok" if seed == 1 else "interrupted")  # Ctrl-C while seed 2 runs
    seed_1, seed_2 = (plan.sweep_dir / "trials" / "0" / f"seed_{s}" for s in (1, 2))
    assert load_record(seed_2 / "record.json").log_tail == "seed 2: interrupted\n"  # the trial's own tail
    again = drive(lambda seed: "ok")
    assert list(again.written) == [seed_2]  # seed 1 was kept, not run again ...
    assert (seed_1 / "record.json").read_bytes() == first.written[seed_1]  # ... nor rewritten
    assert writes == []
    assert load_record(seed_2 / "record.json").sweep["trial"] == 1
    from sweeps.driver import write_results

    table = pd.read_csv(write_results(plan.sweep_dir, study))
    assert list(table["sweep.trial"]) == [1, 1] and list(table["trial_state"]) == ["COMPLETE", "COMPLETE"]


def test_a_smoke_sweeps_records_carry_the_sweep_block_their_trials_wrote(chat_file, tmp_path, monkeypatch):
    """Real trial processes, the driver in this process: it writes no record, yet every record
    has its sweep block, and the crashed trial's has the tail of its output."""
    from sweeps import driver as driver_lib

    writes: list = []
    monkeypatch.setattr(driver_lib, "write_record", lambda *args: writes.append(args))
    monkeypatch.chdir(REPO_ROOT)
    user = tiny(chat_file, "fault.at_step=1", size=16)
    run = compose_run(["+sweep=custom", "+sweep.space.fault.kind=[none,crash]", *user])
    assert driver_lib.run_sweep(run, user, tmp_path / "sweep") == 0
    assert writes == []
    records = {r.sweep["params"]["fault.kind"]: r for r in map(load_record, (tmp_path / "sweep").rglob("record.json"))}
    assert records["none"].status == "ok" and "log_tail" not in records["none"]
    assert records["crash"].status == "failed" and "injected crash" in records["crash"].log_tail
    assert {r.sweep["trial"] for r in records.values()} == {0, 1}
