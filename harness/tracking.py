"""Metric loggers for a run: Lightning's CSVLogger, and Weights & Biases (offline by default),
TensorBoard or MLflow (a local SQLite store), each through Lightning's own logger class.

One W&B run per harness run. A sweep's driver names the group and the run through W&B's own
environment variables (WANDB_RUN_GROUP, WANDB_NAME), so W&B's tables and parallel-coordinates
plots line trials up by sweep. The record stays the source of truth: W&B gets a copy.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from .results import flatten
from .schema import LoggerConfig

log = logging.getLogger(__name__)

# The record fields that make a W&B run's summary (plus every eval score).
SUMMARY_KEYS = ("status", "error", "peak_memory_gib", "peak_memory_kind", "peak_gpu_allocated_gib",
                "peak_gpu_reserved_gib", "peak_rss_gib", "train_seconds", "total_seconds", "eval_seconds",
                "tokens_per_s", "mfu", "optimizer_steps", "trainable_params", "total_params", "train_loss_last",
                "val_loss_first", "val_loss_last", "val_loss_best", "eval", "eval_delta")


def wandb_mode(cfg: LoggerConfig) -> str:
    """``online``, ``offline`` or ``disabled``: WANDB_MODE wins; ``auto`` is online only with a
    configured API key."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if cfg.mode != "auto":
        return cfg.mode
    return "online" if _has_api_key() else "offline"


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def build_loggers(cfg: LoggerConfig, run_dir: Path, resolved_config: dict) -> list:
    """The Lightning loggers for ``logger.name``; the CSV log is kept whenever any is on."""
    from lightning.pytorch.loggers import CSVLogger

    if cfg.name == "none":
        return []
    loggers: list = [CSVLogger(run_dir, name="logs", version="")]
    if cfg.name in ("tensorboard", "mlflow"):
        logger = _tensorboard_logger(run_dir) if cfg.name == "tensorboard" else _mlflow_logger(cfg, run_dir)
        logger.log_hyperparams(flatten(resolved_config))
        loggers.append(logger)
    if cfg.name == "wandb" and wandb_mode(cfg) != "disabled":
        wandb_logger = _wandb_logger(cfg, run_dir, resolved_config)
        if wandb_logger is not None:
            loggers.append(wandb_logger)
    return loggers


def _tensorboard_logger(run_dir: Path):
    """Event files in ``<run dir>/tensorboard`` (``tensorboard --logdir`` over run or sweep dirs)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    _require_module("tensorboard", "tensorboard")
    return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)


MLFLOW_DB = "mlflow.db"


def mlflow_tracking_uri(cfg: LoggerConfig, run_dir: Path) -> str:
    """logger.tracking_uri, else a SQLite file ``<run dir>/mlflow.db`` (MLflow 3's local store: its
    ``./mlruns`` file store is in maintenance mode and refuses new runs unless
    MLFLOW_ALLOW_FILE_STORE=true; a ``file:`` tracking_uri still asks for it). MLFLOW_TRACKING_URI
    is not read: MLflow sets it in-process, where it would leak from one run into the next
    (``logger.tracking_uri='${oc.env:MLFLOW_TRACKING_URI}'`` takes it on purpose)."""
    return cfg.tracking_uri or f"sqlite:///{Path(run_dir).resolve() / MLFLOW_DB}"


def _mlflow_logger(cfg: LoggerConfig, run_dir: Path):
    """An MLflow run in experiment ``logger.project``, named by the sweep driver's trial name
    (WANDB_NAME) or the run dir, tagged with the sweep (WANDB_RUN_GROUP); no server needed."""
    from lightning.pytorch.loggers import MLFlowLogger

    _require_module("mlflow", "mlflow-skinny")
    tags = {"run_dir": str(run_dir)}
    if os.environ.get("WANDB_RUN_GROUP"):
        tags["sweep"] = os.environ["WANDB_RUN_GROUP"]
    uri = mlflow_tracking_uri(cfg, run_dir)
    # Artifacts (none are logged by default) go beside the run, not into the working directory.
    artifacts = (Path(run_dir).resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
    return MLFlowLogger(experiment_name=cfg.project, run_name=os.environ.get("WANDB_NAME") or Path(run_dir).name,
                        tracking_uri=uri, tags=tags, artifact_location=artifacts)


def _require_module(module: str, package: str) -> None:
    import importlib.util

    from .schema import ConfigError

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"logger.name: {module} is not installed; pip install {package} (or logger=csv)")


def _wandb_logger(cfg: LoggerConfig, run_dir: Path, resolved_config: dict):
    from lightning.pytorch.loggers import WandbLogger

    mode = wandb_mode(cfg)
    try:
        wandb_logger = WandbLogger(save_dir=str(run_dir), project=cfg.project, entity=cfg.entity, mode=mode,
                                   config=flatten(resolved_config), log_model=False)
        wandb_logger.experiment  # start the run now, so a W&B failure is caught here  # noqa: B018
    except Exception as exc:  # W&B is a copy of the record: never worth losing the run over
        log.warning("W&B logging off for this run: %s: %s", type(exc).__name__, str(exc).splitlines()[0][:200])
        return None
    log.info("W&B run %s (%s) in %s", wandb_logger.experiment.name, mode, Path(run_dir) / "wandb")
    return wandb_logger


def finish_loggers(loggers: list, record: dict) -> None:
    """Give the W&B run its summary (from the record) and close it; TensorBoard and MLflow get
    the record's numeric summary as metrics (``summary/...``) and MLflow the run's status."""
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    for logger in loggers:
        if isinstance(logger, (TensorBoardLogger, MLFlowLogger)):
            _finish_file_logger(logger, record)
        if not isinstance(logger, WandbLogger):
            continue
        try:
            summary = flatten({k: record[k] for k in SUMMARY_KEYS if record.get(k) is not None})
            logger.experiment.summary.update(summary)
            logger.experiment.finish(exit_code=0 if record.get("status") == "ok" else 1)
        except Exception as exc:  # the record is written next either way
            log.warning("W&B summary not written: %s: %s", type(exc).__name__, str(exc).splitlines()[0][:200])


def _finish_file_logger(logger, record: dict) -> None:
    from lightning.pytorch.loggers import MLFlowLogger

    summary = flatten({k: record[k] for k in SUMMARY_KEYS if record.get(k) is not None})
    numbers = {f"summary/{k}": float(v) for k, v in summary.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    try:
        logger.log_metrics(numbers, step=record.get("optimizer_steps") or 0)
        if isinstance(logger, MLFlowLogger):
            logger.experiment.set_tag(logger.run_id, "status", record.get("status"))
        logger.finalize("success" if record.get("status") == "ok" else "failed")
    except Exception as exc:  # a copy of the record: never worth losing the run over
        log.warning("%s summary not written: %s: %s", type(logger).__name__, type(exc).__name__, str(exc).splitlines()[0][:200])
