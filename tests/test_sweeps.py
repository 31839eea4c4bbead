"""Sweeps: every named sweep plans and runs; failures are data; resume; many drivers on one study."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from harness.paths import CONF_DIR, REPO_ROOT
from harness.schema import RunConfig, SweepConfig
from sweeps import study as study_lib
from sweeps.driver import compose_overrides, metric_value, plan_sweep
from sweeps.space import flatten_space, merge_overrides, parse_space, trial_overrides
from tests.helpers import compose_run, run_cli
from tests.helpers import tiny as tiny_run
from tests.postgres import postgres_bindir, postgres_server

# This module's tiny runs: 16 training examples, 4 for validation, 4 for test.
tiny = partial(tiny_run, size=16)
NAMED = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml") if p.stem != "custom")
# Configurations per named sweep (seeds run within each): (default scale, smoke scale).
# A smoke sweep checks plumbing: each arm whose code differs runs once (a trial process costs about
# 10 CPU-seconds, most of it imports); arms that differ only in a number run one of them.
PLANNED = {"rank_alpha": (18, 1), "rank_lr": (9, 1), "targets": (4, 2), "optimizer_scheduler": (4, 2),
           "qlora": (5, 2), "epochs": (8, 2), "seeds": (4, 1), "dora": (6, 2), "full_vs_lora": (12, 3),
           "data_mix": (3, 1), "memory_7b": (10, 2), "runtime_7b": (3, 1),
           "lr_rank": (28, 2), "targets_matched": (12, 2), "lora_variants": (6, 3),
           "alpha_lr": (16, 1)}


def sweep_cli(args: list[str], sweep_dir: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return run_cli([*args, f"hydra.sweep.dir={sweep_dir}"], timeout=timeout)


def load(sweep_dir: Path, name: str = "custom", storage: str | None = None) -> optuna.Study:
    url = storage or study_lib.storage_url(None, sweep_dir)
    return optuna.load_study(study_name=name, storage=study_lib.open_storage(url))


def results(sweep_dir: Path) -> pd.DataFrame:
    return pd.read_csv(sweep_dir / "results.csv", keep_default_na=False, na_values=[""])


# -- planning: fast, no trial runs ---------------------------------------------------------

def test_named_sweeps_cover_every_finding_with_a_sweep():
    assert set(NAMED) == set(PLANNED)


@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize("scale", ["default", "smoke"])
def test_every_named_sweep_plans_and_validates_every_point(name, scale, tmp_path, monkeypatch):
    from sweeps import driver

    run = compose_run([f"+sweep={name}", f"sweep.scale={scale}"])
    composed: dict[tuple, RunConfig] = {}  # the runs plan_sweep itself composes (a Hydra compose is the cost here)

    def composing(overrides: list[str]):
        composed[tuple(overrides)] = (result := compose_overrides(overrides))[0]
        return result

    monkeypatch.setattr(driver, "compose_overrides", composing)
    plan = plan_sweep(run.sweep, [], tmp_path)
    assert plan.planned == PLANNED[name][0 if scale == "default" else 1]
    assert plan.grid is not None and len(plan.grid) == plan.planned
    assert run.sweep.finding and run.sweep.objectives
    for params in plan.grid:  # each point composes to a run that differs in the swept keys
        trial_run = composed[tuple(merge_overrides(plan.base_overrides, trial_overrides(plan.axes, params)))]
        if "adapter.r" in params:
            assert trial_run.adapter.r == params["adapter.r"]
        if "adapter.alpha_over_r" in params:
            assert trial_run.adapter.alpha == params["adapter.alpha_over_r"] * params["adapter.r"]
    if scale == "smoke":  # a CPU-sized run: the tiny model (preset=smoke, or the 7B shapes' own list)
        assert trial_run.model.name == "tiny"


def test_space_specs_parse_into_axes_and_overrides():
    axes = parse_space(flatten_space({"adapter": {"r": [8, 16]}, "lr": {"low": 1e-5, "high": 1e-3, "log": True},
                                      "q": {"choices": {"nf4_dq": ["quant=nf4", "quant.double_quant=true"]}}}))
    by_key = {a.key: a for a in axes}
    assert by_key["adapter.r"].kind == "categorical" and by_key["adapter.r"].overrides(16) == ["adapter.r=16"]
    assert by_key["lr"].kind == "float" and by_key["lr"].log
    assert by_key["q"].overrides("nf4_dq") == ["quant=nf4", "quant.double_quant=true"]
    assert trial_overrides(axes, {"adapter.r": 8, "lr": 1e-4, "q": "nf4_dq"}) == [
        "adapter.r=8", "lr=0.0001", "quant=nf4", "quant.double_quant=true"]
    assert merge_overrides(["adapter.r=8", "quant=nf4"], ["+adapter.r=16"]) == ["quant=nf4", "+adapter.r=16"]


def test_alpha_over_r_sets_alpha_from_the_rank():
    run = compose_run(["adapter.r=64", "adapter.alpha_over_r=0.5"])
    assert run.adapter.alpha == 32.0


def test_metric_value_reads_nested_record_metrics():
    record = {"peak_memory_gib": 1.5, "eval": {"t": {"acc": {"value": 0.25, "stderr": 0.01}}}, "x": None}
    assert metric_value(record, "peak_memory_gib") == 1.5
    assert metric_value(record, "eval.t.acc") == 0.25
    assert metric_value(record, "eval.t.missing") is None and metric_value(record, "x") is None


def test_a_trial_whose_driver_died_is_failed_and_queued_again(tmp_path):
    storage = study_lib.open_storage(study_lib.storage_url(None, tmp_path))
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    study_lib.mark_running(study, trial)
    trial.suggest_categorical("adapter.r", [8, 16])
    # A live driver's trial is left alone ...
    assert study_lib.reap_stale(study, stale_after=60) == []
    # ... a dead driver's (a pid that cannot exist) is failed as lost and its point re-queued.
    storage.set_trial_system_attr(trial._trial_id, "driver_pid", 2**22 + 12345)
    assert study_lib.reap_stale(study, stale_after=60) == [trial.number]
    frozen = study.trials
    assert frozen[0].state == TrialState.FAIL and frozen[0].user_attrs["status"] == "lost"
    assert frozen[1].state == TrialState.WAITING and frozen[1].system_attrs["fixed_params"] == frozen[0].params
    # A silent driver on another host is failed once its heartbeat is older than the grace period.
    other = study.ask()
    storage.set_trial_system_attr(other._trial_id, "driver_host", "elsewhere")
    storage.set_trial_system_attr(other._trial_id, "heartbeat", time.time() - 600)
    assert study_lib.reap_stale(study, stale_after=60) == [other.number]


def test_storage_passwords_are_not_shown():
    assert "secret" not in study_lib.redact("postgresql://user:secret@db.example:5432/optuna")
    assert study_lib.redact("postgresql://user:secret@db.example:5432/optuna").startswith("postgresql://user:***@")


def test_a_sweep_dry_run_lists_each_configuration_with_its_estimate_and_writes_nothing(tmp_path):
    sweep_dir = tmp_path / "rank_lr"
    result = sweep_cli(["+sweep=rank_lr", "sweep.pack=true", "dry_run=true"], sweep_dir, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not sweep_dir.exists()  # no study, no trial folder: a trial's dry run left a failed record each before
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "estimate_gib" in line)
    rows = [line.split() for line in lines[header + 1:header + 10]]
    assert {(int(r[0]), float(r[1])) for r in rows} == {(r, lr) for r in (4, 16, 64) for lr in (1e-4, 3e-4, 1e-3)}
    by_rank = {int(r[0]): (int(r[2]), float(r[3])) for r in rows}
    assert by_rank[4][0] < by_rank[16][0] < by_rank[64][0] and by_rank[4][1] < by_rank[64][1]
    assert "9 configuration(s) x 3 seed(s) = 27 run(s); compatible trials packed" in result.stdout


def test_sweep_config_rejects_bad_values():
    with pytest.raises(ValueError, match="sweep.n_trials: is required with sampler=tpe"):
        SweepConfig(name="x", space={"a": [1]}, objectives=[{"metric": "m"}], sampler="tpe")
    with pytest.raises(ValueError, match="sweep.start_within: must be > 0 seconds or null, got 0"):
        SweepConfig(name="x", space={"a": [1]}, objectives=[{"metric": "m"}], start_within=0)


# -- running: each trial is a real subprocess run of the tiny model ---------------------------

@pytest.mark.parametrize("name", NAMED)
def test_every_named_sweep_runs_at_smoke_scale(name, tmp_path):
    sweep_dir = tmp_path / name
    result = sweep_cli([f"+sweep={name}", "sweep.scale=smoke", "sweep.workers=2"], sweep_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    table = results(sweep_dir)
    planned = PLANNED[name][1]
    assert len(table) == planned and set(table["status"]) == {"ok"}, table[["status", "error"]].to_string()
    study = load(sweep_dir, name)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == planned
    run = compose_run([f"+sweep={name}"])
    for objective in run.sweep.objectives:
        assert table[objective.metric].notna().all(), objective.metric
    assert "trial" in result.stdout and "status" in result.stdout  # the printed table
    # The findings report reads the real sweep: its page and the sweep's plots. In this process:
    # the CLI itself is tests/test_report.py's, and a process per sweep paid seconds of imports.
    from harness.report.__main__ import main as report_main

    assert report_main([str(sweep_dir), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "report" / f"{name}_pareto.png").is_file()


def test_memory_budget_skips_trials_that_cannot_fit_without_running_them(chat_file, tmp_path):
    sweep_dir = tmp_path / "budget"
    args = ["+sweep=custom", "+sweep.space.model=[tiny,llama2_7b]", "sweep.gpu_memory_budget=4", *tiny(chat_file)]
    args.remove("model=tiny")
    result = sweep_cli(args, sweep_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    table = results(sweep_dir).set_index("sweep.params.model")
    assert table.loc["tiny", "status"] == "ok"
    assert table.loc["llama2_7b", "status"] == "skipped" and "exceeds sweep.gpu_memory_budget=4" in table.loc["llama2_7b", "error"]
    assert table.loc["llama2_7b", "memory_estimate.total_gib"] > 4
    skipped_dir = Path(table.loc["llama2_7b", "run_dir"])
    assert not (skipped_dir / "trial.log").exists()  # no process was started for it


def test_random_sampler_with_seeds_and_pruning_reports(chat_file, tmp_path):
    sweep_dir = tmp_path / "random"
    result = sweep_cli(["+sweep=custom", "+sweep.space.optimizer.lr={low:1e-4,high:1e-2,log:true}", "sweep.sampler=random",
                        "sweep.n_trials=2", "sweep.seeds=[1,2]", "sweep.pruner=median", "trainer.val_every_n_steps=1",
                        *tiny(chat_file)], sweep_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    table = results(sweep_dir)
    assert len(table) == 4 and sorted(set(table["sweep.seed"])) == [1, 2]
    assert all("/seed_" in d for d in table["run_dir"])
    for trial in load(sweep_dir).trials:
        summary = trial.user_attrs["objectives"]["val_loss_last"]
        per_seed = table[table["sweep.trial"] == trial.number]["val_loss_last"]
        assert summary["n"] == 2 and summary["mean"] == pytest.approx(per_seed.mean())
        assert summary["std"] == pytest.approx(per_seed.std())
        assert trial.intermediate_values  # val losses reported while training, for the pruner


def test_start_within_lets_running_trials_finish_and_starts_no_more(chat_file, tmp_path):
    # The window (2 s from the command's start) closes while the first run trains (a tiny run's
    # process alone takes longer): it finishes; neither its trial's second seed (seeds run one
    # after another here) nor the second trial starts; the same command runs both, keeping the
    # first seed's record.
    sweep_dir = tmp_path / "window"
    args = ["+sweep=custom", "+sweep.space.adapter.r=[4,8]", "sweep.seeds=[1,2]", "sweep.workers=1", *tiny(chat_file)]
    first = sweep_cli([*args, "sweep.start_within=2"], sweep_dir)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "sweep.start_within=2s: stopped starting runs, 2 configuration(s) not done yet" in first.stderr
    assert list(results(sweep_dir)["status"]) == ["ok"]
    kept = next(sweep_dir.glob("trials/*/seed_1/record.json"))
    written = kept.stat().st_mtime_ns
    again = sweep_cli(args, sweep_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    table = results(sweep_dir)
    assert list(table["status"]) == ["ok"] * 4 and "sweep.params_order" not in table.columns
    assert kept.stat().st_mtime_ns == written  # the seed that had run was not run again


def test_submitit_launcher_runs_trials_as_jobs(chat_file, tmp_path):
    sweep_dir = tmp_path / "submitit"
    result = sweep_cli(["+sweep=custom", "+sweep.space.seed=[1,2]", "sweep.launcher=submitit",
                        "sweep.submitit.cluster=local", "sweep.submitit.gpus_per_node=0", *tiny(chat_file)], sweep_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    table = results(sweep_dir)
    assert list(table["status"]) == ["ok", "ok"] and set(table["sweep.launcher"]) == {"submitit"}
    assert any((sweep_dir / "submitit").iterdir())  # submitit's own job files


def _drivers_starting_together_all_open_one_fresh_database(server: str, n: int = 8) -> None:
    # An sbatch array starts its drivers at one moment; they race to create Optuna's schema.
    import sqlalchemy

    engine = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("CREATE DATABASE race"))
    engine.dispose()
    barrier, errors = threading.Barrier(n), []

    def open_together():
        barrier.wait()
        try:
            study_lib.open_storage(server.rsplit("/", 1)[0] + "/race")
        except Exception as error:  # collected and asserted below
            errors.append(repr(error)[:300])

    threads = [threading.Thread(target=open_together) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.mark.skipif(postgres_bindir() is None and not os.environ.get("HARNESS_REQUIRE_POSTGRES"),
                    reason="PostgreSQL server binaries not installed (.ci/run installs them)")
def test_three_drivers_share_a_postgres_study_and_each_point_completes_once(chat_file, tmp_path):
    with postgres_server() as server:
        # Trust auth ignores the password; it is there to check that it never leaks.
        url = server.replace("postgres@", "postgres:s3cret-pw@")
        _drivers_starting_together_all_open_one_fresh_database(server)
        sweep_dir = tmp_path / "shared"
        args = [sys.executable, "-m", "harness.run", "+sweep=custom", "+sweep.space.seed=[1,2,3,4,5,6]",
                f"sweep.storage={url}", *tiny(chat_file), f"hydra.sweep.dir={sweep_dir}"]
        env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
        drivers = [subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(3)]
        outputs = [d.communicate(timeout=900) for d in drivers]
        for driver, (_, err) in zip(drivers, outputs, strict=True):
            assert driver.returncode == 0, err[-3000:]
        trials = load(sweep_dir, storage=url).trials
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert sorted(t.params["seed"] for t in complete) == [1, 2, 3, 4, 5, 6]
        assert len({t.system_attrs["driver_pid"] for t in complete}) >= 2  # the work was shared
        written = [p.read_text() for p in sweep_dir.rglob("*") if p.is_file() and p.suffix in (".json", ".csv", ".log")]
        assert written and not any("s3cret-pw" in text for text in written + [o + e for o, e in outputs])


def test_each_trial_leaves_an_offline_wandb_run_with_config_and_summary(chat_file, tmp_path):
    from tests.wandb_offline import offline_run

    sweep_dir = tmp_path / "wandb"
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": ""}  # no key, no network: offline files only
    result = run_cli(["+sweep=custom", "+sweep.space.adapter.r=[4,8]", *tiny(chat_file), "logger=wandb", "eval=custom",
                      "eval.tasks=[harness_heldout]", "eval.limit=4", f"hydra.sweep.dir={sweep_dir}"], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    table = results(sweep_dir)
    assert len(table) == 2
    for _, row in table.iterrows():
        logged = offline_run(Path(row["run_dir"]))
        assert logged["group"] == "custom" and logged["name"] == f"custom-trial-{row['sweep.trial']}"
        assert logged["config"]["adapter.r"] == row["config.adapter.r"]  # the config, flattened
        summary = logged["summary"]
        assert summary["status"] == "ok"
        for key in ("peak_memory_gib", "train_seconds", "tokens_per_s", "eval.harness_heldout.token_nll"):
            assert summary[key] == pytest.approx(row[key]), key
        assert (Path(row["run_dir"]) / "logs" / "metrics.csv").is_file()  # the local CSV log is kept too


def test_concurrent_workers_never_run_one_grid_point_twice(tmp_path):
    # Optuna's grid sampler assigns a point at ask time but the params appear at suggest time; a
    # worker that asked first and samples slowly once let a later worker take its point unseen.
    from sweeps.driver import Driver, make_sampler

    run = compose_run(["+sweep=targets", "sweep.scale=smoke"])
    plan = plan_sweep(run.sweep, [], tmp_path)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", sampler=make_sampler(plan))
    driver = Driver(plan, study, launcher=None, slots=[None])
    suggest = driver._suggest

    def slow_first(trial):
        if trial.number == 0:
            time.sleep(0.5)
        return suggest(trial)

    driver._suggest = slow_first
    taken: list[dict] = []
    threads = [threading.Thread(target=lambda: taken.append(driver._ask())) for _ in range(6)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    points = [tuple(sorted(params.items())) for trial, params in filter(None, taken)]
    assert len(points) == len(set(points)) == plan.planned


def test_the_driver_tokenizes_the_data_once_before_its_trials(tmp_path):
    # Issue 23: the first trials each tokenized the data at once (33 s set-up each in the seeds
    # sweep, 2 s from the cache). The driver tokenizes it into the cache first: every run reads it.
    import json

    data = tmp_path / "chat.jsonl"
    rows = [{"conversations": [{"from": "human", "value": f"What is {a} plus {a}?"},
                               {"from": "gpt", "value": f"{a} plus {a} is {2 * a}."}]} for a in range(2000)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["+sweep=custom", "+sweep.space.adapter.r=[4,8]", "sweep.seeds=[1]", "sweep.workers=2",
                      *tiny_run(data, size=16), "trainer.max_steps=1", f"hydra.sweep.dir={sweep_dir}"],
                     timeout=600, env={"HARNESS_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data tokenized once for the sweep's runs" in result.stderr
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("trials/*/record.json")]
    assert len(records) == 2 and all(r["data"]["tokenized_from_cache"] is True for r in records)
