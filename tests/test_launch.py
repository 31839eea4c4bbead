"""The local launcher: a run forked from the preloaded server is the run a fresh process would
be (arguments, environment, directory, log, exit code, signals), without the imports."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import pytest
import torch

from harness.paths import REPO_ROOT
from sweeps.launch import LocalLauncher, preload_wanted

pytestmark = pytest.mark.e2e  # each test starts processes (the preloaded server imports the harness)


def probe(launcher: LocalLauncher, tmp_path, *args: str, threads: str = "1",
          env: dict | None = None) -> tuple[int, dict, list[str]]:
    log = tmp_path / "run.log"
    log.write_text("before\n")
    env = {"PROBE": "yes", "OMP_NUM_THREADS": threads, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    code = launcher.run([sys.executable, "-m", "tests.launch_probe", *args], env, str(tmp_path), log, beat=lambda: None)
    lines = log.read_text().splitlines()
    return code, json.loads(lines[1]), lines


@pytest.mark.parametrize("preload", [True, False])
def test_a_run_sees_its_arguments_environment_directory_and_log_and_exits_with_its_code(preload, tmp_path):
    code, seen, lines = probe(LocalLauncher(heartbeat_seconds=1.0, preload=preload), tmp_path, "exit", "3")
    assert code == 3
    assert seen["argv"] == ["exit", "3"] and seen["probe"] == "yes" and seen["cwd"] == str(tmp_path)
    assert seen["preloaded"] is preload  # forked from the server that imported the harness, or fresh
    assert lines[0] == "before" and "to stderr" in lines  # the log appended to, stdout and stderr both


def test_a_preloaded_run_gets_the_threads_a_fresh_one_gets(tmp_path):
    # The server read OMP_NUM_THREADS (this suite sets 1) when it loaded torch; a run's own value
    # must hold all the same. 2 threads, as a driver gives each of two runs on four cores.
    fresh = probe(LocalLauncher(heartbeat_seconds=1.0), tmp_path, "exit", "0", threads="2")[1]["threads"]
    forked = probe(LocalLauncher(heartbeat_seconds=1.0, preload=True), tmp_path, "exit", "0", threads="2")[1]["threads"]
    assert forked == fresh


def test_a_preloaded_run_stops_on_the_drivers_signal(tmp_path):
    launcher = LocalLauncher(heartbeat_seconds=0.5, preload=True)
    codes = []
    runner = threading.Thread(target=lambda: codes.append(probe(launcher, tmp_path, "sleep", "0")[0]))
    runner.start()
    log, deadline = tmp_path / "run.log", time.monotonic() + 120
    while not (log.exists() and "preloaded" in log.read_text()):  # the run has started
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)
    assert launcher.interrupt(signal.SIGTERM) == 1
    runner.join(30)
    assert codes == [-signal.SIGTERM]  # as Popen reports a run killed by a signal


def test_a_driver_preloads_unless_told_not_to(monkeypatch):
    monkeypatch.delenv("HARNESS_PRELOAD", raising=False)
    assert preload_wanted()
    monkeypatch.setenv("HARNESS_PRELOAD", "0")
    assert not preload_wanted()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_preloaded_run_uses_the_gpu_it_is_given(tmp_path):
    # The server imported torch, lightning, transformers, peft and bitsandbytes without touching
    # CUDA, so the forked run starts CUDA itself, seeing only the GPU of its CUDA_VISIBLE_DEVICES.
    code, seen, lines = probe(LocalLauncher(heartbeat_seconds=1.0, preload=True), tmp_path, "cuda", "0",
                              env={"CUDA_VISIBLE_DEVICES": "0"})
    assert code == 0, "\n".join(lines)
    assert seen["preloaded"] and json.loads(lines[3]) == {"gpus": 1, "sum": 1024.0 * 1024}


def test_a_run_forked_after_cuda_started_stops_and_names_the_fallback(tmp_path):
    # CUDA cannot work in a child forked after its parent started it. No server here starts CUDA
    # (test_a_preloaded_run_uses_the_gpu_it_is_given), so the child says CUDA started, as a
    # server that had would leave it, and the run must stop before the module runs.
    import subprocess

    log = tmp_path / "run.log"
    child = ("import torch, sys; torch.cuda.is_initialized = lambda: True; from sweeps.launch import run_module_here; "
             f"run_module_here('tests.launch_probe', ['exit', '0'], {{'PYTHONPATH': {str(REPO_ROOT)!r}}}, "
             f"{str(tmp_path)!r}, {str(log)!r})")
    done = subprocess.run([sys.executable, "-c", child], cwd=REPO_ROOT, timeout=120)
    text = log.read_text()
    assert done.returncode != 0
    assert "initialized CUDA before this run was forked" in text and "HARNESS_PRELOAD=0" in text
    assert '"argv"' not in text  # the probe module never ran
