"""sweep.seeds_together: a trial's seeds run side by side, each its own process and record."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.helpers import compose_run, ran_side_by_side, read_record, run_cli


def test_a_trials_seeds_run_at_once_and_each_keeps_its_record(chat_file, tmp_path):
    sweep_dir = tmp_path / "together"
    result = run_cli(["+sweep=custom", "+sweep.space.optimizer.lr=[1e-3]", "sweep.seeds=[1,2]", "sweep.seeds_together=true",
                      "model=tiny", "data=sharegpt_file", f"data.path={chat_file}", "data.train_size=16",
                      "data.val_size=4", "data.test_size=4", "data.max_seq_len=128", "trainer=smoke", "logger=none",
                      "eval=none", f"hydra.sweep.dir={sweep_dir}"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(sweep_dir / "results.csv")
    assert sorted(table["sweep.seed"]) == [1, 2] and set(table["status"]) == {"ok"}
    runs = [Path(d) for d in table["run_dir"]]
    records = [read_record(d) for d in runs]
    assert [r["seed"] for r in records] == list(table["seed"])
    assert all(r["sweep"]["seeds_together"] and r["sweep"]["concurrent_runs"] == 2 for r in records)
    assert ran_side_by_side(runs)
    # The same seeds alone, one after another, train the same losses: running together changes nothing.
    alone = tmp_path / "alone"
    result = run_cli(["+sweep=custom", "+sweep.space.optimizer.lr=[1e-3]", "sweep.seeds=[1,2]",
                      "model=tiny", "data=sharegpt_file", f"data.path={chat_file}", "data.train_size=16",
                      "data.val_size=4", "data.test_size=4", "data.max_seq_len=128", "trainer=smoke", "logger=none",
                      "eval=none", f"hydra.sweep.dir={alone}"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    sequential = pd.read_csv(alone / "results.csv").set_index("sweep.seed")
    one, two = (Path(sequential.loc[s, "run_dir"]) for s in (1, 2))
    assert (two / ".hydra" / "config.yaml").stat().st_mtime > (one / "record.json").stat().st_mtime  # the check can tell
    assert sequential["val_loss_last"].to_dict() == table.set_index("sweep.seed")["val_loss_last"].to_dict()
    assert sequential["val_loss_last"].nunique() == 2  # the seeds differ, so equality above is per seed


def test_seeds_together_with_a_pruner_is_refused():
    import pytest

    from harness.schema import ConfigError

    with pytest.raises(ConfigError, match="sweep.seeds_together"):
        compose_run(["+sweep=custom", "+sweep.space.optimizer.lr=[1e-3]", "sweep.seeds=[1,2]",
                     "sweep.seeds_together=true", "sweep.pruner=median"])


def test_auto_puts_seeds_side_by_side_only_where_runs_get_a_gpu(tmp_path):
    from sweeps.driver import Driver, plan_sweep

    run = compose_run(["+sweep=targets"])  # a quality sweep: seeds_together=auto, 3 seeds
    assert run.sweep.seeds_together == "auto"
    plan = plan_sweep(run.sweep, [], tmp_path)
    on_cpu, on_gpu = Driver(plan, None, None, [None]), Driver(plan, None, None, ["0", "0"])
    assert not on_cpu.seeds_together and on_cpu.concurrent_runs == 1
    assert on_gpu.seeds_together and on_gpu.concurrent_runs == len(on_gpu.slots) * 3
    explicit = plan_sweep(compose_run(["+sweep=targets", "sweep.workers=2"]).sweep, [], tmp_path / "w")
    assert Driver(explicit, None, None, ["0", "0"]).concurrent_runs == 2 * 3  # sweep.workers is obeyed
    runtime = compose_run(["+sweep=runtime_7b", "sweep.seeds_together=true"])  # measures runtime: runs keep the GPU
    assert not Driver(plan_sweep(runtime.sweep, [], tmp_path / "rt"), None, None, ["0"]).seeds_together


def test_seeds_side_by_side_get_a_core_each_spread_over_the_gpus():
    from sweeps.driver import cap_to_cores

    slots = ["0"] * 6 + ["1"] * 6  # 2 GPUs x trials_per_gpu 6, 3 seeds each: 36 runs
    assert cap_to_cores(slots, 3, cores=16) == ["0", "1", "0", "1", "0"]  # 15 runs on 16 cores
    assert cap_to_cores(slots, 3, cores=64) == slots
    assert cap_to_cores(["0"] * 4, 5, cores=2) == ["0"]  # one trial at least, whatever its seeds


def test_auto_is_off_with_a_pruner_and_true_is_refused(tmp_path):
    import pytest

    from harness.schema import ConfigError
    from sweeps.driver import Driver, plan_sweep

    run = compose_run(["+sweep=rank_lr", "sweep.pruner=median"])  # auto (the sweep's): accepted
    plan = plan_sweep(run.sweep, ["trainer.val_every_n_steps=10"], tmp_path)
    assert run.sweep.seeds_together == "auto" and not Driver(plan, None, None, ["0"]).seeds_together
    with pytest.raises(ConfigError, match="sweep.seeds_together: cannot be true with a pruner"):
        compose_run(["+sweep=rank_lr", "sweep.pruner=median", "sweep.seeds_together=true"])


def test_no_trial_starts_once_the_driver_is_interrupted(tmp_path):
    import signal
    import sys

    from sweeps.driver import no_record_left
    from sweeps.launch import LocalLauncher

    launcher = LocalLauncher(heartbeat_seconds=1.0)
    marker = tmp_path / "started"
    cmd = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    assert launcher.run(cmd, {}, str(tmp_path), tmp_path / "a.log", beat=lambda: None) == 0 and marker.exists()
    marker.unlink()
    assert launcher.interrupt() == 0  # nothing running
    # A seed thread that reaches its launch after the interrupt: no process, the signal as its code.
    code = launcher.run(cmd, {}, str(tmp_path), tmp_path / "b.log", beat=lambda: None)
    assert code == -signal.SIGTERM and not marker.exists()
    # ... and its trial runs again on resume (interrupted), where a crash without a record is a result.
    assert no_record_left(tmp_path, code, {}, 1, tmp_path / "b.log")["status"] == "interrupted"
    assert no_record_left(tmp_path, 130, {}, 1, tmp_path / "b.log")["status"] == "interrupted"
    assert no_record_left(tmp_path, 1, {}, 1, tmp_path / "b.log")["status"] == "failed"
