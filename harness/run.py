"""Entry point: ``python -m harness.run [hydra overrides]`` composes, validates, hands off.

User errors (unknown option, wrong type, out-of-range value, missing file, malformed data,
unreachable hub) end the process with exit code 2 and one line on stderr naming the key,
file or line, before any model loads.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import gc
import json
import logging
import os
import signal
import socket
import sys
import warnings
from pathlib import Path

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .compose import compose, compose_error_line, quote_override
from .errors import exit_on_user_error, fail
from .paths import CONF_DIR, ensure_writable_dir, pid_alive, write_error_line
from .preflight import preflight
from .record import RECORD_NAME, RecordWriteError, write_record
from .schema import ConfigError, register_configs
from .signals import STOP, RunInterrupted
from .trial import die_with_parent
from .validation import resolved_config, validate

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
log = logging.getLogger("harness")


def main() -> None:
    """Read the command line, compose and check it, then hand off: to Hydra's own printing
    (``--help``, ``--cfg job``), to the sweep driver (``+sweep=NAME``), or to one run."""
    die_with_parent()  # a sweep trial ends with its driver
    STOP.install()  # a sweep driver replaces it with its own (sweeps.cli)
    try:
        register_configs()
        sys.argv[1:] = [quote_if_needed(a) for a in sys.argv[1:]]
        flags = hydra_flags(sys.argv[1:])
        run, sweep_dir, (run_dir_pattern, run_dir) = precheck(flags.overrides)
        if informational(flags):  # --help, --cfg job, --info...: Hydra prints, nothing runs
            hydra_main()
            return
        if flags.multirun:
            fail("--multirun: sweeps run through the harness's own driver; use +sweep=NAME (see docs/sweeps.md)")
        if run.sweep is not None:  # the sweep package sits above the harness: only this entry point reaches it
            from sweeps.cli import main as sweep_main

            sweep_main(run, flags.overrides, sweep_dir)
        if not run.dry_run:
            unique = unique_run_dir(run_dir_pattern, run_dir)
            if unique is not None:  # replaces the time-based dir, the config's or the command's
                sys.argv = [a for a in sys.argv if not a.lstrip("+").startswith("hydra.run.dir=")]
                sys.argv.append(f"hydra.run.dir={quote_override(unique)}")
            usable_dir(unique or run_dir, "hydra.run.dir")  # before Hydra writes .hydra/ and run.log there
        hydra_main()
    except RunInterrupted as exc:  # before the run had anything to record
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as in train_and_report: exiting on a signal already
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"error: run {exc}", file=sys.stderr)
        sys.exit(128 + exc.signum)


def precheck(overrides: list[str]):
    """Compose once outside Hydra's runner so composition errors become one line, not a page.

    Returns the validated run config, the composed ``hydra.sweep.dir`` and ``hydra.run.dir``
    (as written, and resolved).
    """
    try:
        run, _, hydra_cfg = compose(overrides, hydra=True)
        sweep_dir = hydra_cfg.sweep.dir if run.sweep is not None else None
        return run, sweep_dir, (OmegaConf.to_container(hydra_cfg.run)["dir"], hydra_cfg.run.dir)
    except ConfigError as exc:
        fail(str(exc))
    except (OmegaConfBaseException, ValueError) as exc:  # a run or sweep dir that does not resolve
        fail(compose_error_line(exc))


INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def hydra_flags(argv: list[str]):
    """The command line as Hydra's own parser reads it: its flags (``--cfg job``, ``-c job``,
    ``--info``, ``--help``, ``-m``...) apart from the overrides, so a flag's value is never taken
    for an override, and flags may stand anywhere among the overrides. ``sys.argv`` is rewritten
    in the order Hydra's runner parses (flags, then overrides). A malformed flag is Hydra's usage
    message, exit 2."""
    args = list(argv)
    for i, arg in enumerate(args):  # a bare --info before an override: Hydra's default topic, not the override
        if arg in ("--info", "-i") and (i + 1 == len(args) or args[i + 1] not in INFO_CHOICES):
            args.insert(i + 1, "all")
            break
    flags = get_args_parser().parse_intermixed_args(args)
    rest = list(args)
    for override in flags.overrides:
        rest.remove(override)
    sys.argv[1:] = rest + flags.overrides
    return flags


def informational(flags) -> bool:
    """Flags with which Hydra prints (help, config, info, version, completion) and runs nothing."""
    return bool(flags.help or flags.hydra_help or flags.cfg or flags.info or flags.shell_completion
                or "--version" in sys.argv[1:])


def quote_if_needed(arg: str) -> str:
    """An override whose value has characters Hydra's grammar does not read unquoted (a path with
    non-ASCII letters, ``#``, ``~`` inside), quoted so it means what was typed: ``data.path=/d/é.jsonl``
    becomes ``data.path='/d/é.jsonl'``. Anything else, flags and valid overrides, is returned as is."""
    if arg.startswith("-") or "=" not in arg:
        return arg
    parser = OverridesParser.create()
    try:
        parser.parse_override(arg)
        return arg
    except HydraException as exc:
        if "token recognition error" not in str(exc):
            return arg  # a structural mistake (a bracket, a function): compose_error_line says how to quote
    key, value = arg.split("=", 1)
    quoted = f"{key}={quote_override(value)}"
    try:
        parser.parse_override(quoted)
    except HydraException:
        return arg
    return quoted


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    """The run as Hydra's runner hands it over: the checks, then a dry run's estimate or the run."""
    with exit_on_user_error():
        run = validate(cfg)
        resolved = resolved_config(cfg, run)
        preflight(run)
        if run.dry_run:
            from .estimate import estimate_run  # imports torch: after the checks

            # The estimate plans GPU memory, so precision=auto means what it means on a GPU.
            print(json.dumps(estimate_run(run, device="cuda"), indent=2))
            return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        with exit_on_user_error():
            claim_run_dir(run, run_dir)
            train_and_report(run, resolved, run_dir)
    except RecordWriteError as exc:
        print(f"error: {exc}; the run left no record", file=sys.stderr)
        sys.exit(1)


def train_and_report(run, resolved: dict, run_dir: Path) -> None:
    """Train, print the record's summary; a run that did not end ok exits 1 with one line saying why."""
    record = train(run, resolved, run_dir)
    if record.get("rank", 0) != 0:
        return  # a device process of a multi-device run: rank 0 reports
    summary = {k: record.get(k) for k in ("status", "train_loss_last", "val_loss_last", "tokens_per_s", "train_seconds",
                                          "peak_gpu_allocated_gib", "peak_rss_gib", "adapter_path", "error")}
    log.info("record: %s", run_dir / "record.json")
    print(json.dumps(summary, indent=2, default=str))
    if record["status"] != "ok":
        reason = str(record.get("error") or "no reason recorded").strip().splitlines()
        print(f"error: run {record['status']}: {reason[0] if reason else 'no reason recorded'} "
              f"(record: {run_dir / 'record.json'})", file=sys.stderr)
        signum = getattr(signal, str(record.get("signal")), None) if record["status"] == "interrupted" else None
        if signum:  # stopping on a signal: another one (SLURM's, then the driver's) changes nothing, and
            # must not kill the process as it exits (Python restores the default handlers at shutdown)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(128 + signum if signum else 1)  # interrupted: the shell's code for the signal


def train(run, resolved: dict, run_dir: Path) -> dict:
    """The run as the entry point hands it off: one attempt (:func:`harness.train.run_training`),
    or with ``trainer.oom_retry`` on one device, attempts at smaller micro-batches until one does
    not run out of memory (:func:`run_retrying_oom`). Returns the record."""
    from .train import run_training

    if run.trainer.oom_retry and run.trainer.devices == 1:
        return run_retrying_oom(run, resolved, run_dir)
    return run_training(run, resolved, run_dir)


def run_retrying_oom(run, resolved_config: dict, run_dir: Path) -> dict:
    """``trainer.oom_retry``: :func:`harness.train.run_training`, and while it runs out of memory
    in training, again from the start at half the micro-batch (the largest divisor of the global
    batch at most half) and so twice the accumulation: the global batch, the optimizer steps and
    the data order stay the same. Stops at micro-batch 1. The last record lists every attempt in
    ``oom_retries`` (micro_batch_size, accumulate, status, error); its ``config`` holds the
    micro-batch that ran."""
    import torch

    from .train import run_training

    attempts: list[dict] = []
    while True:
        record = run_training(run, resolved_config, run_dir)
        ran = record["config"]["trainer"]  # after CPU sizing: the batch this attempt trained with
        micro, global_batch = ran["micro_batch_size"], ran["global_batch_size"]
        attempts.append({"micro_batch_size": micro, "accumulate": global_batch // micro, "status": record["status"],
                         "error": record.get("error") if record["status"] != "ok" else None})
        if record["status"] != "oom" or not record.get("oom_in_training") or micro == 1:
            break
        smaller = next(m for m in range(micro // 2, 0, -1) if global_batch % m == 0)
        # Logged as harness.train, where this line has always come from.
        logging.getLogger("harness.train").warning(
            "out of memory at micro-batch %d (accumulate %d): trainer.oom_retry runs again at micro-batch %d "
            "(accumulate %d), global batch %d", micro, global_batch // micro, smaller, global_batch // smaller, global_batch)
        del record
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        # The CPU sizing's batch is what ran; the retry starts over rather than resume a checkpoint
        # taken at the other micro-batch.
        trainer = dataclasses.replace(run.trainer, micro_batch_size=smaller, global_batch_size=global_batch,
                                      cpu_micro_batch_size=None, cpu_global_batch_size=None, resume=None,
                                      resume_override=False)
        run = dataclasses.replace(run, trainer=trainer)
        resolved_config = copy.deepcopy(resolved_config)
        resolved_config["trainer"].update(micro_batch_size=smaller, global_batch_size=global_batch)
    if len(attempts) > 1:
        record["oom_retries"] = attempts
        write_record(run_dir, record)
    return record


def unique_run_dir(pattern: str, resolved: str) -> str | None:
    """The default run dir is a timestamp (``outputs/${now:...}``): two runs started in the same
    second would share it and one record would be lost. Each process makes its own: the first of
    ``DIR``, ``DIR-2``, ``DIR-3``... that it creates itself (mkdir is atomic). None when the run
    dir is not time-based (a fixed dir names one run on purpose)."""
    if "${now:" not in pattern:
        return None
    usable_dir(Path(resolved).parent, "hydra.run.dir")
    for n in range(1, 1000):
        candidate = Path(resolved if n == 1 else f"{resolved}-{n}")
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            candidate.mkdir()
        except FileExistsError:
            if not candidate.is_dir():  # a file of that name: usable_dir says so
                usable_dir(candidate, "hydra.run.dir")
            continue
        except OSError as exc:
            fail(write_error_line(exc, candidate, "hydra.run.dir") or f"hydra.run.dir={candidate}: cannot create the run "
                 f"dir ({exc.strerror or exc})")
        return str(candidate)
    fail(f"hydra.run.dir={resolved}: 999 runs already started there this second")
    return None


def usable_dir(path: str | Path, key: str) -> Path:
    """The run dir, created and proven writable (:func:`harness.paths.ensure_writable_dir`), or
    one error line and exit 2."""
    with exit_on_user_error():
        return ensure_writable_dir(path, key)


LOCK_NAME = ".run.lock"


def claim_run_dir(run, run_dir: Path) -> None:
    """Refuse a run dir that holds another run's record (unless this run resumes it) or that a
    live process is running in; then hold it (a lock file with this process's id) until exit."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return  # a device process of a multi-device run: rank 0 holds the dir
    record = run_dir / RECORD_NAME
    if record.is_file() and run.trainer.resume is None:
        raise ConfigError(f"hydra.run.dir={run_dir}: holds the record of another run; choose a new run dir, or "
                          "resume that run with trainer.resume=auto")
    lock = run_dir / LOCK_NAME
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock.read_text(errors="replace").split() if lock.is_file() else []
            if len(holder) == 2 and holder[0] == socket.gethostname() and holder[1].isdigit() and pid_alive(int(holder[1])):
                raise ConfigError(f"hydra.run.dir={run_dir}: another run (process {holder[1]}) is running in it; "
                                  "choose another run dir") from None
            lock.unlink(missing_ok=True)  # left by a process that is gone
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(me)
        atexit.register(lambda: lock.unlink(missing_ok=True) if lock.is_file() and lock.read_text() == me else None)
        return
    raise ConfigError(f"hydra.run.dir={run_dir}: could not take the run dir (another run keeps claiming it)")


if __name__ == "__main__":
    main()
