"""Launchers: how one trial's run command is executed and waited on.

``local`` runs it as a child process of the driver; ``submitit`` submits it as a SLURM job
(or, with ``sweep.submitit.cluster=local``, as a local submitit job: the same code path). Both
call ``beat`` every few seconds while the run is alive, for the study's liveness check.

``local`` forks each run from a server process that has already imported the harness (the
standard library's ``forkserver``, preloaded with :data:`PRELOAD`): a run's process otherwise
spends about 8 seconds (CPU) to 10-13 seconds (the lent GPU machines) importing torch,
lightning, transformers and peft before any work (docs/benchmarks.md). The server is a fresh
interpreter, and its imports leave CUDA untouched (lightning sets
``PYTORCH_NVML_BASED_CUDA_CHECK=1``, so even a GPU probe asks NVML, not the driver), so each
forked run initializes CUDA itself, under its own ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.forkserver
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness.sweep_schema import SubmititConfig
from harness.trial import PARENT_ENV


def run_command(cmd: list[str], env: dict, cwd: str, log_path: str) -> int:
    """Run ``cmd`` with stdout and stderr to ``log_path``; the exit code (negative: signal)."""
    with open(log_path, "ab") as log_file:
        return subprocess.run(cmd, env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT).returncode


def run_side_by_side(run, items: list, name: str) -> list:
    """``run(item)`` for every item (a seed, a run) at once, one daemon thread each (so a driver
    stopping on Ctrl-C never waits for them, as it does not for its workers); the results in order."""
    results: list = [None] * len(items)

    def one(i: int, item) -> None:
        try:
            results[i] = run(item)
        except BaseException as exc:  # re-raised in the worker below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i, item), daemon=True, name=f"{name}-{i}")
               for i, item in enumerate(items)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


# What every run process imports first: torch, lightning, transformers, peft (harness.train),
# and the pack runner. Importing them once in the fork server is the start-up each run saves.
# Last, the server's own signal setting (sweeps.fork_server).
PRELOAD = ["harness.train", "harness.packing", "sweeps.fork_server"]
PRELOAD_ENV = "HARNESS_PRELOAD"  # "0": every run a fresh process
SERVER_ENV = "HARNESS_FORK_SERVER"  # set in the preloaded server's environment only (sweeps.fork_server)


def run_environment() -> dict:
    """The environment a run or pack starts from: the driver's, with warnings off unless the
    user set ``PYTHONWARNINGS`` (a run's log is for what it did, not its libraries' deprecations).
    The preloaded server starts from it too: the warning filters are read at interpreter start."""
    return dict(os.environ, PYTHONWARNINGS=os.environ.get("PYTHONWARNINGS", "ignore"))


def preload_wanted() -> bool:
    """Whether a local driver forks its runs from a preloaded server: yes, unless
    ``HARNESS_PRELOAD=0``."""
    return os.environ.get(PRELOAD_ENV, "1") != "0"


def run_module_here(module: str, args: list[str], env: dict, cwd: str, log_path: str) -> None:
    """In a process forked from the preloaded server: what ``python -m module args`` with
    ``env``, ``cwd`` and stdout and stderr appended to ``log_path`` would do. Its exit code is
    the module's (``SystemExit``), as the process's."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server ignores it (sweeps.fork_server)
    # The server stays up while any process holds its "alive" pipe, and each process forked from
    # it is handed one: a killed driver then left the server, hence this run, going until the
    # run ended (2026-12-07). Closed here, the server ends with the driver, and this run with it.
    from multiprocessing import forkserver

    alive = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)  # a private name: absent, nothing to do
    if alive is not None:
        os.close(alive)
        forkserver._forkserver._forkserver_alive_fd = None
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # The server is this process's parent: it exits when the driver does, and this process then
    # with it (harness.trial.die_with_parent checks the parent it was told).
    env = dict(env, **{PARENT_ENV: str(os.getppid())}) if PARENT_ENV in env else env
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    import torch

    if torch.cuda.is_initialized():  # CUDA cannot work in a process forked after it started
        raise RuntimeError(f"the preloaded server initialized CUDA before this run was forked from it; "
                           f"run the sweep with {PRELOAD_ENV}=0 (a fresh process per run)")
    threads = env.get("OMP_NUM_THREADS")
    if threads:  # OpenMP read the variable when the server loaded torch, not now
        torch.set_num_threads(int(threads))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


@functools.cache
def preloaded_server():
    """The forkserver context whose server imports :data:`PRELOAD`. The server starts here, on
    first use (a launcher's, in the driver's main thread), and imports while the caller goes on
    (a fork waits until it is done)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    # Interpreter-wide settings read at start-up come from the server's environment: the
    # warning filters of run_environment().
    saved = {key: os.environ.get(key) for key in ("PYTHONWARNINGS", SERVER_ENV)}
    os.environ.update(PYTHONWARNINGS=run_environment()["PYTHONWARNINGS"], **{SERVER_ENV: "1"})
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value
    return context


class PreloadedProcess:
    """A run forked from the preloaded server, with the part of ``subprocess.Popen`` that
    :class:`LocalLauncher` uses: ``wait``, ``send_signal``, ``kill``."""

    def __init__(self, cmd: list[str], env: dict, cwd: str, log_path: str):
        module, args = cmd[2], cmd[3:]
        self.process = preloaded_server().Process(target=run_module_here, args=(module, args, env, cwd, log_path),
                                                  name=module)
        self.process.start()
        self.pid, self.returncode = self.process.pid, None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.process.join(timeout)
            if self.process.exitcode is None:
                raise subprocess.TimeoutExpired(self.process.name, timeout)
            self.returncode = self.process.exitcode
            self.process.close()  # its pipe to the server, one per run
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class LocalLauncher:
    """Each trial a child process; it dies with the driver (see :func:`harness.trial.die_with_parent`).
    With ``preload``, each ``python -m`` run is forked from the preloaded server instead
    (:class:`PreloadedProcess`; the module docstring says when)."""

    def __init__(self, heartbeat_seconds: float, preload: bool = False):
        self.heartbeat_seconds = heartbeat_seconds
        self.preload = preload
        if preload:  # the server imports while the driver plans and tokenizes
            preloaded_server()
        self.running: set = set()
        self.lock = threading.Lock()
        self.stopping: int | None = None  # the signal of interrupt(); no trial starts after it

    def start(self, cmd: list[str], env: dict, cwd: str, log_file, log_path: Path):
        """The run's process: forked from the preloaded server, or a fresh one."""
        if self.preload and cmd[:2] == [sys.executable, "-m"]:
            return PreloadedProcess(cmd, env, cwd, str(log_path))
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT)

    def run(self, cmd: list[str], env: dict, cwd: str, log_path: Path, beat: Callable[[], None]) -> int:
        """Run one trial process to its end; its exit code (minus the signal, as Popen gives it,
        without starting it once :meth:`interrupt` was called)."""
        env = dict(env, **{PARENT_ENV: str(os.getpid())})
        with open(log_path, "ab") as log_file:
            with self.lock:  # started and listed at once, so interrupt() never misses it
                if self.stopping is not None:
                    return -self.stopping
                proc = self.start(cmd, env, cwd, log_file, log_path)
                self.running.add(proc)
            try:
                while True:
                    try:
                        return proc.wait(timeout=self.heartbeat_seconds)
                    except subprocess.TimeoutExpired:
                        beat()
            except BaseException:
                proc.kill()  # the driver is stopping: do not leave the trial running on its own
                proc.wait()
                raise
            finally:
                with self.lock:
                    self.running.discard(proc)

    def interrupt(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` to every running trial (each then stops at the end of its optimizer
        step, checkpoints when checkpointing is on, and records ``interrupted``); how many."""
        with self.lock:
            self.stopping = signum
            procs = list(self.running)
        for proc in procs:
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass
        return len(procs)


class SubmititLauncher:
    """Each trial one submitit job (a SLURM job on a cluster); the driver waits on its result."""

    def __init__(self, cfg: SubmititConfig, folder: Path, heartbeat_seconds: float):
        try:
            import submitit
        except ImportError as exc:  # pragma: no cover - submitit is a dependency
            raise RuntimeError("sweep.launcher=submitit needs submitit: pip install submitit") from exc
        self.heartbeat_seconds = heartbeat_seconds
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cfg.cluster)
        params = dict(timeout_min=cfg.timeout_min, gpus_per_node=cfg.gpus_per_node, cpus_per_task=cfg.cpus_per_task,
                      mem_gb=cfg.mem_gb, name="harness-trial")
        if cfg.partition:
            params["slurm_partition"] = cfg.partition
        if cfg.additional_parameters:
            params["slurm_additional_parameters"] = dict(cfg.additional_parameters)
        self.executor.update_parameters(**params)
        self.jobs: set = set()

    def interrupt(self, signum: int = signal.SIGTERM) -> int:
        """Cancel every running job: SLURM signals its processes (SIGTERM, SIGKILL after its
        KillWait), and each trial stops as on preemption. How many."""
        jobs = list(self.jobs)
        for job in jobs:
            job.cancel(check=False)
        return len(jobs)

    def run(self, cmd: list[str], env: dict, cwd: str, log_path: Path, beat: Callable[[], None]) -> int:
        # On SLURM the job's GPUs come from the allocation, not from the driver's slot.
        env = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
        job = self.executor.submit(run_command, cmd, env, cwd, str(log_path))
        self.jobs.add(job)
        try:
            while not job.done():
                beat()
                time.sleep(min(self.heartbeat_seconds, 2.0))
            return job.result()
        except BaseException as exc:
            import submitit

            if isinstance(exc, submitit.core.utils.FailedJobError | submitit.core.utils.UncompletedJobError):
                with open(log_path, "a") as handle:
                    handle.write(f"\nsubmitit job {job.job_id} failed: {str(exc)[-2000:]}\n")
                return 1
            job.cancel(check=False)
            raise
        finally:
            self.jobs.discard(job)

