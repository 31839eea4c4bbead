"""Entry point: ``python -m harness.run [hydra overrides]`` composes, validates, hands off.

User errors (unknown option, wrong type, out-of-range value, missing file, malformed data,
unreachable hub) end the process with exit code 2 and one line on stderr naming the key,
file or line, before any model loads.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .paths import CONF_DIR
from .schema import ConfigError, register_configs, resolved_config, validate

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
log = logging.getLogger("harness")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def is_hydra_override(arg: str) -> bool:
    return arg.lstrip("+~").startswith(("hydra.", "hydra/"))


def precheck(argv: list[str]):
    """Compose once outside Hydra's runner so composition errors become one line, not a page.

    Returns the validated run config and the composed ``hydra.sweep.dir``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in argv if not a.startswith("-")]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        sweep_dir = cfg.hydra.sweep.dir if "sweep" in cfg and cfg.sweep is not None else None
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        fail(compose_error_line(exc))
    try:
        return validate(cfg), sweep_dir
    except ConfigError as exc:
        fail(str(exc))


def compose_error_line(exc: Exception) -> str:
    """One line from Hydra's multi-line composition errors, keeping the key and the options."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.options:
        options = sorted(o for o in exc.options if not o.endswith("_schema"))
        return f"{exc.missing_cfg_file}: no such option; available: {', '.join(options)}"
    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        key = getattr(cause, "full_key", None)
        if key:  # the first cause that names the key says what was wrong with it
            return f"{line} - {key}: {str(cause).splitlines()[0]}"
        cause = cause.__cause__ or cause.__context__
    return line


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    try:
        run = validate(cfg)
    except ConfigError as exc:
        fail(str(exc))
    resolved = resolved_config(cfg, run)
    if run.dry_run:
        from .errors import USER_ERRORS
        from .estimate import estimate_run

        try:
            # The estimate plans GPU memory, so precision=auto means what it means on a GPU.
            print(json.dumps(estimate_run(run, device="cuda"), indent=2))
        except USER_ERRORS as exc:
            fail(str(exc))
        return
    from .errors import USER_ERRORS
    from .train import run_training

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    from .record import RecordWriteError

    try:
        record = run_training(run, resolved, run_dir)
    except USER_ERRORS as exc:
        fail(str(exc))
    except RecordWriteError as exc:
        print(f"error: {exc}; the run left no record", file=sys.stderr)
        sys.exit(1)
    if record.get("rank", 0) != 0:
        return  # a device process of a multi-device run: rank 0 reports
    summary = {k: record.get(k) for k in ("status", "train_loss_last", "val_loss_last", "tokens_per_s", "train_seconds",
                                          "peak_gpu_allocated_gib", "peak_rss_gib", "adapter_path", "error")}
    log.info("record: %s", run_dir / "record.json")
    print(json.dumps(summary, indent=2))
    if record["status"] != "ok":
        sys.exit(1)


def sweep_main(run, argv: list[str], sweep_dir: str) -> None:
    """``+sweep=NAME``: the driver runs each trial as its own ``python -m harness.run``."""
    from sweeps.driver import run_sweep

    from .errors import USER_ERRORS

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    trial_overrides = [a for a in argv if not a.startswith("-") and not is_hydra_override(a)
                       and not a.lstrip("+~").startswith("sweep")]
    from sweeps.study import StorageUnavailable

    try:
        code = run_sweep(run, trial_overrides, Path(sweep_dir))
    except USER_ERRORS as exc:
        fail(str(exc))
    except StorageUnavailable as exc:
        # Completed trials are safe in the storage; the interrupted ones run again on resume.
        print(f"error: {exc}; stopped. Run the same command again to resume", file=sys.stderr)
        sys.exit(3)
    sys.exit(code)


def main() -> None:
    from sweeps.launch import die_with_parent

    die_with_parent()
    register_configs()
    run, sweep_dir = precheck(sys.argv[1:])
    if run.sweep is not None:
        sweep_main(run, sys.argv[1:], sweep_dir)
    hydra_main()


if __name__ == "__main__":
    main()
