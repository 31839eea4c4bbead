"""``python -m harness.run +sweep=NAME``: the entry point hands the composed run here. The
driver (:func:`sweeps.driver.run_sweep`) runs each trial as its own ``python -m harness.run``;
this module turns how the sweep ended into one ``error:`` line and an exit code: 2 for a user
error, 1 for a sweep that stopped (a full or read-only sweep dir, a stall), 3 when the study's
storage became unreachable, 128+N on signal N."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import NoReturn

from harness.compose import is_hydra_override
from harness.errors import exit_on_user_error
from harness.paths import ensure_writable_dir, write_error_line
from harness.schema import RunConfig

from .driver import run_sweep
from .study import StorageUnavailable, open_storage, storage_url
from .workers import SweepStalled


def main(run: RunConfig, overrides: list[str], sweep_dir: str) -> NoReturn:
    """Run the sweep ``run.sweep`` in ``sweep_dir``; the command line's other overrides apply
    to every trial. Exits."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    trial_overrides = [a for a in overrides if not is_hydra_override(a) and not a.lstrip("+~").startswith("sweep")]
    signal.signal(signal.SIGTERM, raise_interrupted)  # preemption: stop as on Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the driver's own, not a run's (STOP)
    if run.dry_run:  # the plan only: nothing is written, no study opened
        from .preview import preview_text

        with exit_on_user_error():
            print(preview_text(run, trial_overrides, Path(sweep_dir).resolve()))
        sys.exit(0)
    with exit_on_user_error():
        ensure_writable_dir(sweep_dir, "hydra.sweep.dir")  # before the storage, plan.json or any trial folder is written
        open_storage(storage_url(run.sweep.storage, Path(sweep_dir).resolve()))  # a storage that cannot open: one line, first
    try:
        with exit_on_user_error():
            code = run_sweep(run, trial_overrides, Path(sweep_dir))
    except OSError as exc:  # the sweep dir filled up or turned read-only mid-sweep (files there are written atomically)
        line = write_error_line(exc, sweep_dir, "hydra.sweep.dir")
        if line is None:
            raise
        print(f"error: {line}; finished trials are kept: run the same command again to resume", file=sys.stderr)
        sys.exit(1)
    except StorageUnavailable as exc:
        # Completed trials are safe in the storage; the interrupted ones run again on resume.
        print(f"error: {exc}; stopped. Run the same command again to resume", file=sys.stderr)
        sys.exit(3)
    except SweepStalled as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        name = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
        print(f"error: sweep interrupted by {name}; finished trials are kept, running ones were stopped (with a "
              "checkpoint when checkpointing is on; packed ones with their pack states) and run again from it: run the same command again to resume",
              file=sys.stderr)
        sys.exit(128 + getattr(exc, "signum", signal.SIGINT))
    if code != 0:
        print(f"error: sweep {run.sweep.name} stopped before every configuration was done; run the same command "
              "again to resume", file=sys.stderr)
    sys.exit(code)


class Interrupted(KeyboardInterrupt):
    """SIGTERM (what SLURM sends on preemption) taken as Ctrl-C, remembering the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)
