"""Reliability: real faults injected into real runs and sweeps, and what survives them.

Each test adds a row to a ledger (what was injected, how often, what survived, what was lost);
when every test of this module has passed, the ledger is written to docs/reliability.md, so
that page is this suite's own output.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState

from harness.paths import CONF_DIR, REPO_ROOT
from harness.record import write_record
from sweeps import study as study_lib
from tests.helpers import compose_run, read_record, run_cli
from tests.helpers import tiny as tiny_run
from tests.postgres import postgres_bindir, postgres_server, restart_postgres

# This module's tiny runs: 16 training examples, 4 for validation, 4 for test.
tiny = partial(tiny_run, size=16)
# The module's tests spread over the xdist workers (run on one worker, they were the suite's
# longest chain: about half its wall time on two cores); only the interrupted runs that share the
# `straight` run keep to one worker (xdist_group "reliability_straight"). The ledger is therefore
# kept in files in the session's temporary folder, which every worker of one session shares: each
# passing test writes its rows there, and whichever worker leaves this module last with every row
# present writes the page.
EXPECTED_ROWS = 24
DOC = REPO_ROOT / "docs" / "reliability.md"
_LEDGER_DIR: list[Path] = []  # set by the ledger fixture: <session tmp>/reliability_ledger


def note(fault: str, how: str, times: int, survived: str, lost: str = "nothing") -> None:
    """One row of the page; rows are ordered as their note() calls stand in this file."""
    line = sys._getframe(1).f_lineno
    row = {"fault": fault, "how": how, "times": times, "survived": survived, "lost": lost}
    path = _LEDGER_DIR[0] / f"{line:05d}.json"
    path.with_suffix(".tmp").write_text(json.dumps(row))
    path.with_suffix(".tmp").replace(path)


def read_ledger(folder: Path) -> dict[str, dict]:
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return {r.pop("fault"): r for r in rows}


@pytest.fixture(scope="module", autouse=True)
def ledger(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    session = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: <session>/popen-gwN
    folder = session / "reliability_ledger"
    folder.mkdir(exist_ok=True)
    _LEDGER_DIR[:] = [folder]
    yield folder
    rows = read_ledger(folder)
    if len(rows) == EXPECTED_ROWS:  # only a full, passing run of this module rewrites the page
        write_reliability_page(rows)


def write_reliability_page(rows: dict[str, dict]) -> None:
    from tests.test_bad_input import CASES, ENTRY_CASES

    lines = [
        "# Reliability",
        "",
        "Written by `tests/test_reliability.py` (it runs in `.ci/run`): each row is a fault the suite",
        "injected into real runs and sweeps on the tiny model, and what the suite then checked.",
        "Regenerate with `python -m pytest tests/test_reliability.py`; the page is rewritten only",
        "when every test of that file passed.",
        "",
        "| Fault injected | How | Times | What survived (checked) | Lost |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {fault} | {r['how']} | {r['times']} | {r['survived']} | {r['lost']} |" for fault, r in rows.items()]
    total = sum(r["times"] for r in rows.values())
    lost = [fault for fault, r in rows.items() if r["lost"] != "nothing"]
    lines += [
        "",
        f"Faults injected: {total}. Lost: {'nothing' if not lost else ', '.join(lost)}.",
        "",
        f"Bad input is covered by `tests/test_bad_input.py`: {len(CASES)} cases over config values, data",
        "files (truncated JSON, fields of another format, empty, non-UTF-8, an absurdly long example,",
        "not JSON), model paths, checkpoints and sweep spaces; each must end with one `error:` line",
        "naming the key, file or line, exit code 2, no record claiming success, and no model weights",
        "loaded first. Keys the schema lacks (at any depth, with or without `+`) name the key probably",
        "meant; inf and nan, seeds outside numpy's range, a rank larger than its layer are refused the same",
        f"way. {len(ENTRY_CASES)} more cases cover `harness.export`, `harness.eval` and the record loader",
        "(truncated records, records without a status, a copied run dir without its adapter, bad flags).",
        "Storage and the file system: a sweep storage that is down, a removed backend (redis), an SQLite",
        "file in a missing folder, a corrupt or truncated optuna.db, a corrupt journal, a run or sweep dir",
        "that is a file or under one, each one line naming the URL (password masked) or path and what to do.",
        "Data and model files: a lone surrogate, absurd nesting, ShareGPT roles that match none of the",
        "common spellings (the line lists the roles found), a model folder with a corrupt config.json,",
        "truncated or missing weights, or only tokenizer files (named before the data is read).",
        "Hydra's own flags (`--cfg job`, `-c job`, `--info`, `--help`) print as Hydra documents, `-m` is",
        "refused in favour of `+sweep=NAME`, and paths with spaces or non-ASCII letters work (a value the",
        "override grammar cannot read gets one line showing the quoting that works).",
        "",
    ]
    partial_page = DOC.with_name(f"{DOC.name}.{os.getpid()}.part")  # two workers may both write it: atomically
    partial_page.write_text("\n".join(lines))
    partial_page.replace(DOC)


def results(sweep_dir: Path) -> pd.DataFrame:
    return pd.read_csv(sweep_dir / "results.csv", keep_default_na=False, na_values=[""])


def load(sweep_dir: Path, storage: str | None = None) -> optuna.Study:
    url = storage or study_lib.storage_url(None, sweep_dir)
    return optuna.load_study(study_name="custom", storage=study_lib.open_storage(url))


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def strict_json(text: str):
    """JSON as strict parsers read it: Infinity and NaN are not JSON."""
    def refuse(constant):
        raise AssertionError(f"record holds {constant}, which is not JSON")
    return json.loads(text, parse_constant=refuse)


def no_half_written_files(root: Path) -> None:
    """Every record.json under ``root`` parses (strictly), and no atomic-write temp file was left behind."""
    for path in root.rglob("record.json"):
        strict_json(path.read_text())
    assert not [p for p in root.rglob("*.tmp")], "a temp file of an interrupted write was left behind"


# -- faults inside trials: each becomes a record and the sweep goes on ----------------------------

def test_faults_in_trials_become_records_and_the_sweep_goes_on(chat_file, tmp_path):
    sweep_dir = tmp_path / "faults"
    kinds = ["none", "oom", "nan", "crash", "kill", "disk_full"]
    result = run_cli(["+sweep=custom", f"+sweep.space.fault.kind=[{','.join(repr(k) for k in kinds)}]", "sweep.workers=2",
                      *tiny(chat_file, "fault.at_step=1"), f"hydra.sweep.dir={sweep_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    table = results(sweep_dir).set_index("sweep.params.fault.kind")
    assert sorted(table.index) == sorted(kinds)  # one row per trial, none missing
    assert table.loc["none", "status"] == "ok"
    assert table.loc["oom", "status"] == "oom" and "out of memory" in table.loc["oom", "error"]
    assert table.loc["oom", "peak_memory_gib"] > 0  # the memory reached is recorded
    assert table.loc["nan", "status"] == "diverged" and "nan" in table.loc["nan", "error"]
    assert table.loc["nan", "optimizer_steps"] == 1  # stopped at the step the loss went bad
    assert table.loc["crash", "status"] == "failed" and "injected crash" in table.loc["crash", "error"]
    assert "injected crash" in table.loc["crash", "log_tail"]
    assert table.loc["kill", "status"] == "failed" and "signal 9" in table.loc["kill", "error"]
    # The trial could write nothing more (its log neither); the driver wrote its record.
    assert table.loc["disk_full", "status"] == "failed" and "exited with code 1 without a record" in table.loc["disk_full", "error"]
    states = {t.params["fault.kind"]: (t.state, t.user_attrs["status"]) for t in load(sweep_dir).trials}
    assert states["none"] == (TrialState.COMPLETE, "ok")
    assert states["oom"] == (TrialState.FAIL, "oom") and states["nan"] == (TrialState.FAIL, "diverged")
    no_half_written_files(sweep_dir)
    note("trial runs out of GPU memory", "`fault.kind=oom` in a 6-trial sweep, 2 workers", 1,
         "record `oom` with the peak memory reached; the other trials ran")
    note("loss becomes NaN", "`fault.kind=nan` (a poisoned weight) in the same sweep", 1,
         "record `diverged`, stopped at the bad step; the other trials ran")
    note("trial crashes", "`fault.kind=crash` in the same sweep", 1,
         "record `failed` with the error and the log tail; the other trials ran")
    note("trial process SIGKILLed", "`fault.kind=kill` in the same sweep", 1,
         "record `failed` (signal 9), written by the driver; the other trials ran")
    note("disk refuses writes in a trial", "`fault.kind=disk_full` (RLIMIT_FSIZE) in the same sweep", 1,
         "record `failed`, written by the driver; no half-written file; the other trials ran")


def test_disk_refusing_writes_leaves_no_half_record_and_the_last_checkpoint_resumes(chat_file, tmp_path):
    run_dir = tmp_path / "full_disk"
    args = tiny(chat_file, "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2", "logger=csv")
    refused = run_cli([*args, "fault.kind=disk_full", "fault.at_step=3"], run_dir)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].endswith("could not write the run record (File too large); the run left no record")
    assert not (run_dir / "record.json").exists()  # never a record claiming anything
    no_half_written_files(run_dir)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)  # whole, from step 2
    assert checkpoint["global_step"] == 2
    resumed = run_cli([*args, "trainer.resume=auto"], run_dir)  # space is back
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "ok" and record["resumed_at_step"] == 2 and record["optimizer_steps"] == 6
    note("disk refuses writes in a run", "`fault.kind=disk_full` at step 3 of 6, checkpoints every 2 steps", 1,
         "no record.json and no temp file; the step-2 checkpoint loads whole and the resumed run ends ok")


def test_a_failure_after_start_up_says_why_in_one_line_and_in_the_record(chat_file, tmp_path):
    run_dir = tmp_path / "crashed"
    result = run_cli(tiny(chat_file, "fault.kind=crash"), run_dir)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1]
    assert errors[0].startswith("error: run failed: RuntimeError: injected crash")
    assert "injected crash" in read_record(run_dir)["error"]
    diverged = run_cli(tiny(chat_file, "fault.kind=nan"), tmp_path / "diverged")
    assert diverged.returncode == 1 and diverged.stderr.strip().splitlines()[-1].startswith("error: run diverged: ")
    assert strict_json((tmp_path / "diverged" / "record.json").read_text())["status"] == "diverged"
    # Non-finite values (a NaN loss, an infinite perplexity) are written as null: strict JSON.
    write_record(tmp_path / "nonfinite", {"status": "diverged", "train_losses": [2.5, float("nan")],
                                          "eval": {"ppl": {"value": float("inf"), "stderr": float("-inf")}}})
    record = strict_json((tmp_path / "nonfinite" / "record.json").read_text())
    assert record["train_losses"] == [2.5, None] and record["eval"]["ppl"] == {"value": None, "stderr": None}
    note("a run fails after start-up", "`fault.kind=crash` and `fault.kind=nan` in single runs", 2,
         "exit 1 with one `error:` line giving the status and the reason; the record carries the same reason; "
         "no NaN or Infinity in any record (strict JSON, non-finite values are null)")


def test_runs_started_together_never_share_a_run_dir(chat_file, tmp_path):
    # A time-based run dir (the default is outputs/${now:...}); a day-long stamp makes them collide.
    pattern = f"hydra.run.dir={tmp_path}/runs/${{now:%Y-%m-%d}}"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "harness.run", *tiny(chat_file), pattern]
    procs = [subprocess.Popen(cmd + [f"seed={seed}"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    records = sorted((tmp_path / "runs").rglob("record.json"))
    assert len(records) == 2 and records[0].parent != records[1].parent
    assert sorted(read_record(r.parent)["seed"] for r in records) == [1, 2]  # both results kept
    # A named run dir that holds a record is refused, and the record stays as it was.
    taken = records[0].parent
    before = (taken / "record.json").read_bytes()
    again = run_cli(tiny(chat_file), taken)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [f"error: hydra.run.dir={taken}: holds the record of another run; "
                                                 "choose a new run dir, or resume that run with trainer.resume=auto"]
    assert (taken / "record.json").read_bytes() == before
    note("two runs started in the same second with a time-based run dir", "two runs at once, `${now:%Y-%m-%d}` run dir", 2,
         "each got its own run dir and record; a third run named into a dir holding a record was refused with one line")


# -- the driver and the storage ---------------------------------------------------------------------

def test_a_killed_driver_resumes_without_rerunning_completed_trials(chat_file, tmp_path):
    sweep_dir = tmp_path / "resume"
    args = [sys.executable, "-m", "harness.run", "+sweep=custom", "+sweep.space.seed=[1,2,3]", *tiny(chat_file),
            f"hydra.sweep.dir={sweep_dir}"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    driver = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def first_done_second_started():
        record = sweep_dir / "trials" / "0" / "record.json"
        return record.is_file() and "sweep" in json.loads(record.read_text()) and (sweep_dir / "trials" / "1" / "trial.log").is_file()

    try:
        wait_for(first_done_second_started, 300, "trial 0 to finish and trial 1 to start")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    first_record = sweep_dir / "trials" / "0" / "record.json"
    first_written = first_record.stat().st_mtime_ns
    time.sleep(3)
    assert not (sweep_dir / "trials" / "1" / "record.json").exists()  # the trial died with its driver

    result = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert first_record.stat().st_mtime_ns == first_written  # completed trial not run again
    trials = load(sweep_dir).trials
    lost = [t for t in trials if t.user_attrs.get("status") == "lost"]
    assert [t.number for t in lost] == [1]  # the RUNNING trial of the dead driver
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["seed"] for t in complete) == [1, 2, 3]  # each point exactly once
    retry = next(t for t in complete if t.params == lost[0].params)
    assert retry.user_attrs["retry_of"] == 1
    assert (results(sweep_dir)["trial_state"] == "COMPLETE").sum() == 3
    no_half_written_files(sweep_dir)

    # The same dir with a different space is refused, not mixed in.
    changed = run_cli(["+sweep=custom", "+sweep.space.seed=[1,2]", *tiny(chat_file), f"hydra.sweep.dir={sweep_dir}"])
    assert changed.returncode == 2 and "was started with different" in changed.stderr.strip().splitlines()[-1]
    note("sweep driver SIGKILLed mid-trial, then the same command again",
         "SIGKILL of the driver process while trial 1 runs", 1,
         "trial 0 not rerun; trial 1 (left RUNNING, its process gone with the driver) marked `lost` and its "
         "point run again; 3 of 3 points complete once")


def test_values_that_collide_are_swept_once_and_a_deleted_record_is_listed_as_lost(chat_file, tmp_path):
    sweep_dir = tmp_path / "collide"
    # 0 and 0.0 are one setting of a float key: one trial, and the driver ends (it used to loop).
    args = ["+sweep=custom", "+sweep.space.scheduler.min_lr_ratio=[0,0.0]", *tiny(chat_file), f"hydra.sweep.dir={sweep_dir}"]
    first = run_cli(args, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "configures the same run as 0; swept once" in first.stderr
    assert len(load(sweep_dir).trials) == 1 and len(results(sweep_dir)) == 1
    # The record of the finished trial is deleted: the same command lists it as lost, not dropped.
    (sweep_dir / "trials" / "0" / "record.json").unlink()
    again = run_cli(args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trial 0: record missing" in again.stderr
    table = results(sweep_dir)
    assert len(table) == 1 and table.loc[0, "status"] == "lost" and "record missing" in table.loc[0, "error"]
    assert table.loc[0, "trial_state"] == "COMPLETE" and table.loc[0, "sweep.params.scheduler.min_lr_ratio"] == 0
    note("sweep space values that collide after type coercion", "`[0, 0.0]` on a float key", 1,
         "swept once (the driver ends; it used to create duplicate trials without end)")
    note("a finished trial's record deleted, then the same sweep command", "record.json of trial 0 removed", 1,
         "the driver warns and results.csv keeps the trial's row as `lost` with its params and objective "
         "(the record itself is gone by the user's hand)")


@pytest.mark.skipif(postgres_bindir() is None and not os.environ.get("HARNESS_REQUIRE_POSTGRES"),
                    reason="PostgreSQL server binaries not installed (.ci/run installs them)")
def test_a_postgres_restart_mid_sweep_is_survived_or_stops_cleanly(chat_file, tmp_path):
    with postgres_server() as url:
        env = dict(os.environ, PYTHONWARNINGS="ignore")

        def start(sweep_dir: Path, *extra: str) -> subprocess.Popen:
            args = [sys.executable, "-m", "harness.run", "+sweep=custom", "+sweep.space.seed=[1,2,3]", f"sweep.storage={url}",
                    f"sweep.study_name={sweep_dir.name}", "sweep.heartbeat_seconds=1", *extra, *tiny(chat_file),
                    f"hydra.sweep.dir={sweep_dir}"]
            return subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        # A restart shorter than sweep.storage_retry_seconds: the driver reconnects and finishes.
        survived = tmp_path / "survived"
        driver = start(survived)
        wait_for(lambda: (survived / "trials" / "1" / "trial.log").is_file(), 300, "trial 1 to start")
        restart_postgres(url, down_seconds=4)
        _, err = driver.communicate(timeout=600)
        assert driver.returncode == 0, err[-3000:]
        assert "storage unreachable" in err  # the outage was seen, and ridden out
        trials = optuna.load_study(study_name="survived", storage=study_lib.open_storage(url)).trials
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert sorted(t.params["seed"] for t in complete) == [1, 2, 3]

        # An outage longer than the retry window: one clear line, exit 3, and the same command resumes.
        # The server stays down from trial 0's start until the driver has stopped, so the driver
        # must record trial 0 during the outage (a fixed-length outage could fall while only
        # heartbeats, which may fail, touch the storage, and the driver would rightly ride it out).
        stopped = tmp_path / "stopped"
        driver = start(stopped, "sweep.storage_retry_seconds=2")
        wait_for(lambda: (stopped / "trials" / "0" / "trial.log").is_file(), 300, "trial 0 to start")
        with postgres_down(url):
            _, err = driver.communicate(timeout=600)
        assert driver.returncode == 3, err[-3000:]
        assert "sweep storage unreachable for 2 s" in err.strip().splitlines()[-1]
        assert "Run the same command again to resume" in err.strip().splitlines()[-1]
        resumed = start(stopped)
        _, err = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, err[-3000:]
        trials = optuna.load_study(study_name="stopped", storage=study_lib.open_storage(url)).trials
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert sorted(t.params["seed"] for t in complete) == [1, 2, 3]
        no_half_written_files(tmp_path)
    note("PostgreSQL restarted mid-sweep", "server stopped (immediate) for 4 s while a trial runs", 1,
         "driver retried, reconnected and finished: 3 of 3 points complete once")
    note("PostgreSQL down longer than `sweep.storage_retry_seconds`",
         "server stopped from trial 0's start until the driver gave up (it must record trial 0), retry window 2 s", 1,
         "driver stopped with one error line and exit code 3; the same command resumed and completed all 3 points")


@pytest.mark.skipif(postgres_bindir() is None and not os.environ.get("HARNESS_REQUIRE_POSTGRES"),
                    reason="PostgreSQL server binaries not installed (.ci/run installs them)")
def test_a_storage_that_refuses_the_login_or_is_down_stops_the_sweep_in_one_line(chat_file, tmp_path):
    from sqlalchemy import create_engine, text

    from tests.postgres import _SERVERS, _as_server_user

    with postgres_server() as url:
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("CREATE ROLE harness LOGIN PASSWORD 'right-one'"))
        engine.dispose()
        bindir, data, *_ = _SERVERS[url]
        Path(data, "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        subprocess.run(_as_server_user([f"{bindir}/pg_ctl", "-D", data, "reload"]), check=True, capture_output=True)
        time.sleep(1)
        host = url.split("@", 1)[1]
        outcomes = {}
        for name, storage in (("wrong password", f"postgresql://harness:secret-wrong@{host}"),
                              ("server down", "postgresql://harness:secret-wrong@127.0.0.1:1/postgres")):
            sweep_dir = tmp_path / name.replace(" ", "_")
            result = run_cli(["+sweep=custom", "+sweep.space.seed=[1]", f"sweep.storage={storage}", *tiny(chat_file),
                              f"hydra.sweep.dir={sweep_dir}"], timeout=300)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
            assert "secret" not in result.stdout + result.stderr and "harness:***@" in lines[0]
            assert not (sweep_dir / "trials").exists() and not (sweep_dir / "plan.json").exists()
            outcomes[name] = lines[0]
        assert "the server refused the login (" in outcomes["wrong password"]
        assert "check the user name and password in sweep.storage" in outcomes["wrong password"]
        assert "cannot reach the database server" in outcomes["server down"]
    note("sweep storage refuses the login, or its server is down, at the start of a sweep",
         "`sweep.storage=postgresql://` with a wrong password (scram auth), and with no server on the port", 2,
         "one `error:` line with the URL, password masked (`***`), and what to do; exit 2; no trial folder or plan written")


@contextmanager
def postgres_down(url: str):
    """The server of ``url`` stopped at once (every connection drops) inside the block, started after."""
    from tests.postgres import _SERVERS, _as_server_user

    bindir, data, log, port, root = _SERVERS[url]
    subprocess.run(_as_server_user([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]), check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(_as_server_user([f"{bindir}/pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o",
                                        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200",
                                        "start"]), check=True, capture_output=True)


# -- training: resume and determinism -------------------------------------------------------------

def test_a_run_killed_mid_training_resumes_to_the_same_final_loss(chat_file, tmp_path):
    # Gradient accumulation 2, validation every 2 steps, LoRA dropout on: resume must restore the
    # weights, optimizer, scheduler, data position and RNG for the losses to match exactly.
    args = tiny(chat_file, "data.train_size=32", "trainer.max_steps=6", "trainer.micro_batch_size=4",
                "trainer.global_batch_size=8", "trainer.val_every_n_steps=2", "adapter.dropout=0.1")
    straight = run_cli(args, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    interrupted_dir = tmp_path / "interrupted"
    killed = run_cli([*args, "trainer.checkpoint_every_n_steps=2", "fault.kind=kill", "fault.at_step=3"], interrupted_dir)
    assert killed.returncode == -signal.SIGKILL and not (interrupted_dir / "record.json").exists()
    resumed = run_cli([*args, "trainer.checkpoint_every_n_steps=2", "trainer.resume=auto"], interrupted_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = read_record(tmp_path / "straight"), read_record(interrupted_dir)
    assert b["resumed_at_step"] == 2 and b["optimizer_steps"] == 6
    assert b["train_losses"] == a["train_losses"]  # every step, bit for bit
    assert b["train_loss_last"] == a["train_loss_last"] and b["val_loss_last"] == a["val_loss_last"]
    note("training SIGKILLed at step 3 of 6", "`fault.kind=kill`, checkpoints every 2 steps, then `trainer.resume=auto`", 1,
         "the resumed run's loss curve equals the uninterrupted run's, step for step (CPU, same seed)")


# Gradient accumulation 2 and LoRA dropout: a resume is exact only from an optimizer-step boundary
# with the RNG state, so these runs show that a signal never leaves a checkpoint mid-accumulation.
SIGNAL_ARGS = ("data.train_size=32", "trainer.max_steps=8", "trainer.micro_batch_size=2", "trainer.global_batch_size=4",
               "adapter.dropout=0.1")


@pytest.fixture(scope="module")
def straight(chat_file, tmp_path_factory):
    """The uninterrupted 8-step run the interrupted ones are compared with."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    result = run_cli(tiny(chat_file, *SIGNAL_ARGS), run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return read_record(run_dir)


def start_cli(args: list[str], run_dir: Path | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "harness.run", *args] + ([f"hydra.run.dir={run_dir}"] if run_dir else [])
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=dict(os.environ, PYTHONWARNINGS="ignore"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.xdist_group("reliability_straight")  # one worker runs `straight` once for these
def test_sigterm_and_sigint_of_a_run_record_interrupted_and_the_checkpoint_resumes_the_same_curve(chat_file, tmp_path, straight):
    run_dir = tmp_path / "preempted"
    args = tiny(chat_file, *SIGNAL_ARGS, "trainer.checkpoint_every_n_steps=2")
    proc = start_cli(args, run_dir)
    wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), 300, "the first checkpoint")
    proc.send_signal(signal.SIGTERM)  # what SLURM and submitit send on preemption
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    record = strict_json((run_dir / "record.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"
    step = record["optimizer_steps"]
    assert 2 <= step < 8
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == step  # saved at the step it stopped at, not the last periodic one
    assert error_lines(err) == [err.strip().splitlines()[-1]]
    assert error_lines(err)[0].startswith(f"error: run interrupted: stopped by SIGTERM at optimizer step {step}; checkpoint")
    assert record["train_losses"] == straight["train_losses"][:step]
    # The same command resumes (a logger and an eval setting changed: they do not change training).
    resumed = run_cli([*args, "trainer.resume=auto", "logger=csv", "eval.batch_size=2"], run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "ok" and record["resumed_at_step"] == step and record["resume_overrides"] is None
    assert record["train_losses"] == straight["train_losses"]  # every step, bit for bit

    # SIGINT (Ctrl-C) with checkpointing off: the same record and one line, no checkpoint.
    run_dir = tmp_path / "ctrl_c"
    # Long enough that Ctrl-C lands in training even on a fast, idle machine (8 steps can be
    # over within the 2 s wait below).
    long_run = [a for a in SIGNAL_ARGS if not a.startswith("trainer.max_steps=")] + ["trainer.max_steps=2000"]
    proc = start_cli(tiny(chat_file, *long_run), run_dir)
    wait_for(lambda: (run_dir / "run.log").is_file() and b"TPU available" in (run_dir / "run.log").read_bytes(), 300,
             "the trainer to start")
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    record = strict_json((run_dir / "record.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGINT" and record["checkpoint"] is None
    assert len(error_lines(err)) == 1 and error_lines(err)[0].startswith("error: run interrupted: stopped by SIGINT")
    assert "Traceback" not in err
    assert not (run_dir / "checkpoints").exists()
    note("SIGTERM of a run mid-training (preemption), then the same command with `trainer.resume=auto`",
         "SIGTERM after the first checkpoint; gradient accumulation 2, checkpoints every 2 steps", 1,
         "stopped at the end of the optimizer step under way with a checkpoint of it, record `interrupted` with the "
         "signal, exit 143 with one line; the resumed run's loss curve equals the uninterrupted run's, step for step")
    note("SIGINT (Ctrl-C) of a run with checkpointing off", "SIGINT during training", 1,
         "record `interrupted` (SIGINT), exit 130 with one line; no traceback, no checkpoint")


@pytest.mark.xdist_group("reliability_straight")  # one worker runs `straight` once for these
def test_resuming_with_changed_settings_is_refused_unless_overridden(chat_file, tmp_path, straight):
    run_dir = tmp_path / "changed"
    args = tiny(chat_file, *SIGNAL_ARGS, "trainer.checkpoint_every_n_steps=2")
    killed = run_cli([*args, "fault.kind=kill", "fault.at_step=3"], run_dir)
    assert killed.returncode == -signal.SIGKILL
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    before = checkpoint.read_bytes()
    refused = run_cli([*args, "trainer.resume=auto", "optimizer.lr=1e-3", "adapter.dropout=0.2"], run_dir)
    assert refused.returncode == 2, refused.stderr[-3000:]
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: trainer.resume={checkpoint}: the checkpoint was saved by a run "
                                                   "with other settings (adapter.dropout 0.1 -> 0.2; optimizer.lr 0.0003 -> 0.001)")
    assert "trainer.resume_override=true" in lines[0] and "Loading weights" not in refused.stdout + refused.stderr
    assert checkpoint.read_bytes() == before and not (run_dir / "record.json").exists()  # nothing ran
    # Overridden: the new learning rate takes effect from the resumed step on (the optimizer's
    # restored state would otherwise keep the old one: the curve would equal the uninterrupted run's).
    resumed = run_cli([*args, "trainer.resume=auto", "optimizer.lr=1e-2", "trainer.resume_override=true"], run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = read_record(run_dir)
    assert record["resume_overrides"] == {"optimizer.lr": {"checkpoint": 0.0003, "run": 0.01}}
    assert record["config"]["optimizer"]["lr"] == 0.01 and record["resumed_at_step"] == 2
    losses = record["train_losses"]
    assert losses[:3] == straight["train_losses"][:3]  # steps 1-3: weights from before the resume
    assert all(a != b for a, b in zip(losses[3:], straight["train_losses"][3:], strict=True))
    note("resume with a changed learning rate (or any setting that changes training)",
         "`trainer.resume=auto` with `optimizer.lr` and `adapter.dropout` changed, then with `trainer.resume_override=true`", 2,
         "refused with one line naming both keys and their values, before any weights load, checkpoint untouched; "
         "overridden: the new lr takes effect from the resumed step and the record lists it in `resume_overrides`")


@pytest.mark.xdist_group("reliability_straight")  # one worker runs `straight` once for these
def test_a_preempted_trial_resumes_from_its_checkpoint_on_the_next_sweep_command(chat_file, tmp_path, straight):
    sweep_dir = tmp_path / "preempted"
    args = [sys.executable, "-m", "harness.run", "+sweep=custom", "+sweep.space.seed=[42]",
            *tiny(chat_file, *SIGNAL_ARGS, "trainer.checkpoint_every_n_steps=2"), f"hydra.sweep.dir={sweep_dir}"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    # Its own process group, as a SLURM job: preemption sends SIGTERM to every process in it.
    driver = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    trial_dir = sweep_dir / "trials" / "0"
    wait_for(lambda: (trial_dir / "checkpoints" / "last.ckpt").is_file(), 300, "the trial's first checkpoint")
    os.killpg(driver.pid, signal.SIGTERM)  # the driver and its trial
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert error_lines(err) == [err.strip().splitlines()[-1]] and "sweep interrupted by SIGTERM" in error_lines(err)[0]
    record = read_record(trial_dir)
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"
    step = record["optimizer_steps"]
    first = load(sweep_dir).trials
    assert [(t.state, t.user_attrs.get("status")) for t in first] == [(TrialState.FAIL, "interrupted"), (TrialState.WAITING, None)]

    again = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    record = read_record(trial_dir)  # the same grid point, in the same folder, from its checkpoint
    assert record["status"] == "ok" and record["resumed_at_step"] == step and record["sweep"]["trial"] == 1
    assert record["train_losses"] == straight["train_losses"]  # the uninterrupted run's curve, step for step
    trials = load(sweep_dir).trials
    assert trials[1].state == TrialState.COMPLETE and trials[1].user_attrs["retry_of"] == 0
    assert not (sweep_dir / "trials" / "1").exists()
    table = results(sweep_dir)
    assert list(table["status"]) == ["ok"] and list(table["trial_state"]) == ["COMPLETE"]  # no failed point kept
    no_half_written_files(sweep_dir)
    note("a sweep preempted: SIGTERM to the driver and its trial mid-training, then the same sweep command",
         "SIGTERM to the job's process group after the trial's first checkpoint", 1,
         "the trial checkpointed its step and recorded `interrupted`; the driver queued the point again and exited "
         "with one line; the next command resumed the point from that checkpoint in its folder, ending `ok` with "
         "the uninterrupted run's loss curve; results.csv has one `ok` row, no failed point")


@pytest.mark.xdist_group("reliability_straight")  # one worker runs `straight` once for these
def test_same_seed_same_curve_and_another_seed_another(chat_file, tmp_path, straight):
    # The uninterrupted run (seed 42, LoRA dropout on) is the first of the three runs.
    args = tiny(chat_file, *SIGNAL_ARGS)
    curves = {"a": straight["train_losses"]}
    for name, seed in (("b", 42), ("c", 43)):
        result = run_cli([*args, f"seed={seed}"], tmp_path / name)
        assert result.returncode == 0, result.stderr[-3000:]
        curves[name] = read_record(tmp_path / name)["train_losses"]
    assert straight["seed"] == 42 and len(curves["a"]) == 8
    assert curves["a"] == curves["b"]
    assert curves["a"] != curves["c"]
    note("determinism", "the same run twice with seed 42, once with seed 43", 3,
         "seed 42 gives identical loss curves; seed 43 a different one")


def read_all(stream, chunks: list[str]) -> None:
    """Collect a pipe's text as it comes (progress bars end their updates with \\r, not lines)."""
    chunks.extend(iter(lambda: stream.read(256), ""))


def printed_since(chunks: list[str], start: int, text: str) -> bool:
    return text in "".join(chunks)[start:]


def test_a_signal_while_scoring_after_training_records_interrupted(chat_file, tmp_path):
    import threading
    from functools import partial

    args = [a for a in tiny(chat_file) if a != "eval=none"] + ["eval=local", "eval.limit=100"]
    for signum, times in ((signal.SIGINT, 1), (signal.SIGTERM, 2)):  # SIGTERM twice: SLURM, then the sweep driver
        run_dir = tmp_path / signal.Signals(signum).name
        proc = start_cli(args, run_dir)
        err_chunks: list[str] = []
        reader = threading.Thread(target=read_all, args=(proc.stderr, err_chunks), daemon=True)
        reader.start()
        adapter = run_dir / "adapter" / "adapter_config.json"
        wait_for(adapter.is_file, 600, "training to finish")
        # lm-eval's progress bar on the trained model: the signal lands while it scores.
        wait_for(partial(printed_since, err_chunks, len("".join(err_chunks)), "Running loglikelihood requests"), 300,
                 "scoring after training")
        for _ in range(times):
            proc.send_signal(signum)
            time.sleep(0.05)
        proc.wait(timeout=300)
        reader.join(timeout=30)
        err = "".join(err_chunks)
        assert proc.returncode == 128 + signum, err[-3000:]
        record = strict_json((run_dir / "record.json").read_text())
        assert record["status"] == "interrupted" and record["signal"] == signal.Signals(signum).name
        assert record["optimizer_steps"] == record["planned_steps"] and record["adapter_path"]  # trained and saved
        assert "eval" not in record  # scoring was cut short: no scores claimed
        assert error_lines(err) == [err.strip().splitlines()[-1]] and "Traceback" not in err
        assert error_lines(err)[0].startswith(f"error: run interrupted: stopped by {signal.Signals(signum).name}")
        no_half_written_files(run_dir)
    note("SIGINT or SIGTERM while scoring, after training finished", "SIGINT once, SIGTERM twice 50 ms apart, "
         "while lm-eval scores the trained model", 2,
         "record `interrupted` with the signal, the training's losses and the adapter path, no scores; exit 130/143 with "
         "one line; a second signal waits for the record to be written")


def _unshare_works() -> bool:
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(sys.platform != "linux" or not _unshare_works(),
                    reason="needs unshare -r -m (a private mount namespace) to mount a full or read-only file system")
def test_a_full_or_read_only_file_system_under_the_run_or_sweep_dir_is_one_line(chat_file, tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    # Each command runs in its own mount namespace with a small tmpfs at `mount`: read-only, or
    # filled to the last byte before the harness starts.
    setups = {"read-only": f"mount -t tmpfs -o ro,size=1m tmpfs {mount}",
              "full": f"mount -t tmpfs -o size=64k tmpfs {mount} && (dd if=/dev/zero of={mount}/filler bs=4k 2>/dev/null; true)"}
    expected = {"read-only": ("cannot write there: read-only file system", "; choose a folder on a writable file system"),
                "full": ("cannot write there: the disk is full", "; free space there or choose a folder on another disk")}
    import shlex

    for kind, setup in setups.items():
        for key, args in (("hydra.run.dir", tiny(chat_file)),
                          ("hydra.sweep.dir", ["+sweep=custom", "+sweep.space.seed=[1]", *tiny(chat_file)])):
            target = mount / "out" / key
            command = shlex.join([sys.executable, "-m", "harness.run", *args, f"{key}={target}"])
            check = f"; find {mount} -name 'record.json' -o -name 'optuna.db' -o -name '*.tmp' -o -name '.hydra'"
            result = subprocess.run(["unshare", "-r", "-m", "sh", "-c", f"{setup} && {command}; echo rc=$?{check}"],
                                    cwd=REPO_ROOT, env=dict(os.environ, PYTHONWARNINGS="ignore"), capture_output=True,
                                    text=True, timeout=300)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert "rc=2" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
            what, todo = expected[kind]
            assert len(lines) == 1 and lines[0].startswith(f"error: {key}={target}: {what}"), result.stderr[-3000:]
            assert lines[0].endswith(todo), lines[0]
            assert result.stdout.strip().splitlines()[-1] == "rc=2"  # nothing was written there: no record, db or temp file
    note("a read-only or full file system under the run dir or the sweep dir", "tmpfs mounted read-only, and one filled "
         "to the last byte, under `hydra.run.dir` and `hydra.sweep.dir`", 4,
         "one `error:` line naming the key, the path, what is wrong and what to do; exit 2; nothing written there "
         "(no record, database, `.hydra` or temp file)")


def test_a_run_or_sweep_dir_that_is_a_file_or_under_one_is_refused_before_anything_is_written(chat_file, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    for key, extra in (("hydra.run.dir", []), ("hydra.sweep.dir", ["+sweep=custom", "+sweep.space.seed=[1]"])):
        for target, says in ((blocker, "is a file, not a folder"), (blocker / "sub", f"{blocker} is a file, so no folder")):
            result = run_cli([*extra, *tiny(chat_file), f"{key}={target}"], timeout=300)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.returncode == 2 and len(lines) == 1 and says in lines[0], result.stderr[-3000:]
            assert lines[0].startswith(f"error: {key}={target}: ") and "Traceback" not in result.stderr
    assert blocker.read_text() == "keep me" and list(tmp_path.iterdir()) == [blocker]
    note("a run dir or sweep dir that is a file, or lies under one", "`hydra.run.dir` and `hydra.sweep.dir` set to a "
         "file and to a path under it", 4, "one `error:` line naming the key and the file; exit 2; the file untouched, "
         "nothing else written")


# -- safety -----------------------------------------------------------------------------------------

class _Planted:
    """Unpickling this would run code: it writes the file its path names."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "code ran"))


def test_checkpoints_load_weights_only_and_remote_code_stays_off(chat_file, tmp_path):
    args = tiny(chat_file, "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2")
    run_dir = tmp_path / "planted"
    assert run_cli(args, run_dir).returncode == 0
    checkpoint_path = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    marker = tmp_path / "pwned"
    checkpoint["harness"]["planted"] = _Planted(str(marker))
    torch.save(checkpoint, checkpoint_path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    result = run_cli([*args, f"trainer.resume={checkpoint_path}"], tmp_path / "victim")
    assert not marker.exists()  # the planted code never ran
    assert result.returncode != 0
    assert read_record(tmp_path / "victim")["status"] == "failed"
    assert "Weights only load failed" in read_record(tmp_path / "victim")["error"]
    for option in sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if not p.stem.endswith("schema")):
        extra = ["model.name_or_path=some-org/some-model"] if option == "hf" else []
        assert compose_run([f"model={option}", *extra]).model.trust_remote_code is False, option
    note("a checkpoint carrying pickled code", "`trainer.resume=` a checkpoint with a planted object", 1,
         "load refused (weights_only); the planted code did not run; record `failed`")
