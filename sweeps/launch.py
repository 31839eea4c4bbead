"""Launchers: how one trial's run command is executed and waited on.

``local`` runs it as a child process of the driver; ``submitit`` submits it as a SLURM job
(or, with ``sweep.submitit.cluster=local``, as a local submitit job: the same code path). Both
call ``beat`` every few seconds while the run is alive, for the study's liveness check.
"""

from __future__ import annotations

import os
import signal
import subprocess
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


class LocalLauncher:
    """Each trial a child process; it dies with the driver (see :func:`harness.trial.die_with_parent`)."""

    def __init__(self, heartbeat_seconds: float):
        self.heartbeat_seconds = heartbeat_seconds
        self.running: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping: int | None = None  # the signal of interrupt(); no trial starts after it

    def run(self, cmd: list[str], env: dict, cwd: str, log_path: Path, beat: Callable[[], None]) -> int:
        """Run one trial process to its end; its exit code (minus the signal, as Popen gives it,
        without starting it once :meth:`interrupt` was called)."""
        env = dict(env, **{PARENT_ENV: str(os.getpid())})
        with open(log_path, "ab") as log_file:
            with self.lock:  # started and listed at once, so interrupt() never misses it
                if self.stopping is not None:
                    return -self.stopping
                proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT)
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

