"""Stopping a run on SIGTERM (preemption: SLURM, submitit) or SIGINT: the process's one signal
state (:data:`STOP`), shared by the entry point, the training loop and the run's record."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)


class RunInterrupted(BaseException):
    """SIGTERM (preemption: SLURM, submitit) or SIGINT stopped a run. A BaseException, so no
    crash handler records it as a failure: the run records status ``interrupted``."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: Path | None = None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.name = signal.Signals(signum).name
        where = f" at optimizer step {step}" if step is not None else ""
        if checkpoint is not None:
            then = f"checkpoint of that step saved in {checkpoint}; the same command with trainer.resume=auto continues"
        elif step is not None:
            then = "no checkpoint (trainer.checkpoint_every_n_steps is null): run it again to start over"
        else:
            then = "run it again"
        super().__init__(f"stopped by {self.name}{where}; {then}")


class StopSignals:
    """SIGTERM and SIGINT for one run. Outside training they stop the run at once; while
    training (``defer``, set by :class:`harness.module.StopAtStep`) the first one stops it at
    the end of the optimizer step under way, where a checkpoint resumes exactly. A second SIGINT
    (Ctrl-C again) stops at once; a repeated SIGTERM (SLURM, then the sweep driver) does not."""

    def __init__(self):
        self.signum: int | None = None
        self.defer = False
        self.installed = False
        self.held = False
        self.pid: int | None = None  # the process that installed the handlers

    def hold(self) -> None:
        """From here until :meth:`release` a signal is only remembered: the run is writing its
        record (a second SIGTERM, from SLURM then the sweep driver, or Ctrl-C pressed twice, must
        not leave the run without one). The record is written, then the process ends."""
        self.held = True

    def release(self) -> None:
        """Signals act again, unless one has come: then the run is stopping, and later ones
        (SLURM's, then the sweep driver's SIGTERM) must not cut its last words short."""
        if self.signum is None:
            self.held = False

    def install(self, defer: bool = False) -> None:
        if not self.installed and defer:
            return  # the run did not start from the command line: leave the process's handlers alone
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.handle)
        self.installed, self.defer, self.pid = True, defer, os.getpid()

    def handle(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            # A forked child (lm-eval's pool worker, a data loader worker) inherited the handler:
            # it ends as the signal says. Raising here instead left Pool.terminate() waiting on it.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        first = self.signum is None
        if first:
            self.signum = signum
        if self.held:
            log.warning("%s received while the run record is written: it is written first", signal.Signals(signum).name)
            return
        if self.defer and (first or signum == signal.SIGTERM):
            if first:
                log.warning("%s received: stopping at the end of this optimizer step", signal.Signals(signum).name)
            return
        raise RunInterrupted(self.signum)


STOP = StopSignals()
