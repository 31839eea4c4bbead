"""One training run, from a validated config to a record: the builders wired together.

:func:`run_training` reads as its phases: :func:`prepare` (device, precision, every check that
needs no weights, the data) -> :func:`build_model` and :func:`build_loop` (model, adapter,
Lightning) -> :func:`fit` -> :func:`gather` (measurements across devices) ->
:func:`save_and_score` -> :func:`finish_record`; how a run that raised ends is :data:`OUTCOMES`.
It is one attempt: ``trainer.oom_retry`` is the entry point's (:mod:`harness.run`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path

import lightning as L
import torch

from . import adapters, batches, data, evaluate, measure, models, scoring, speed, tracking
from .errors import USER_ERRORS
from .estimate import estimate_run, resolve_precision
from .faults import fault_callbacks
from .module import (
    DivergedError,
    FineTuneModule,
    StopAtStep,
    check_resume_config,
    optimizer_class,
    scheduler_function,
    steps_per_epoch,
)
from .paths import MissingPathError
from .record import CHECKPOINT_DIR, RunRecord, Status, git_sha, loss_summary, versions, write_record
from .schema import ConfigError, RunConfig
from .signals import STOP, RunInterrupted
from .trial import PrunedError, stamp, trial_callbacks, trial_info

log = logging.getLogger(__name__)


def pick_device(accelerator: str) -> str:
    """``cuda`` or ``cpu`` for trainer.accelerator (auto takes a GPU when there is one)."""
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator}: no CUDA GPU is available on this machine")
        return "cuda"
    if accelerator == "cpu":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def plan_steps(run: RunConfig, n_train: int, device: str, sized: dict | None = None) -> tuple[int, str | None]:
    """Total optimizer steps for the run, and a note when the run was sized to the CPU: the step
    cap and every other ``cpu_*`` value :func:`size_for_cpu` applied (``sized``), scoring included."""
    t = run.trainer
    full = steps_per_epoch(n_train, t.micro_batch_size * t.devices, t.accumulate_grad_batches) * t.epochs
    steps, parts = full, []
    if t.max_steps is not None:
        steps = t.max_steps
    elif device == "cpu" and t.cpu_sizing and t.cpu_max_steps is not None and t.cpu_max_steps < full:
        steps = t.cpu_max_steps
        parts.append(f"training stops after trainer.cpu_max_steps={t.cpu_max_steps} of {full} optimizer steps")
    for key, change in (sized or {}).items():
        if key == "eval.tasks":
            parts.append(f"scores {len(change['applied'])} of the {len(change['configured'])} eval.tasks "
                         f"({', '.join(change['applied'])})")
        elif key == "eval.limit":
            parts.append(f"scores the first {change['applied']} documents of each task (a seeded random subset; "
                         "the record's standard errors are for that many)")
        else:
            parts.append(f"{key}={change['applied']} (configured {change['configured']})")
    if not parts:
        return steps, None
    return steps, ("no GPU found, so this run is sized for the CPU: " + "; ".join(parts)
                   + ". trainer.cpu_sizing=false runs the full schedule and scores the full suite")


def command_line_keys() -> set[str] | None:
    """The config keys the user set on the command line (Hydra's task overrides); None outside
    ``python -m harness.run``, where a caller composed the run itself and gets it unsized."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return {override.lstrip("+~").split("=", 1)[0].strip() for override in HydraConfig.get().overrides.task}


def size_for_cpu(run: RunConfig, device: str, user_keys: set[str]) -> tuple[RunConfig, dict]:
    """On CPU (with ``trainer.cpu_sizing``), the run with each ``cpu_*`` value in place of its
    counterpart, unless that value is null or the user set the counterpart (``user_keys``; the
    micro- and global batch go together, and ``eval.limit`` is replaced only when null). Returns
    the run as it will go and ``{key: {"configured", "applied"}}`` for every key it changed."""
    t, e = run.trainer, run.eval
    if device != "cpu" or not t.cpu_sizing:
        return run, {}
    wanted: dict = {}  # counterpart key -> CPU value
    if t.cpu_micro_batch_size is not None and not {"trainer.micro_batch_size", "trainer.global_batch_size"} & user_keys:
        wanted.update({"trainer.micro_batch_size": t.cpu_micro_batch_size, "trainer.global_batch_size": t.cpu_global_batch_size})
    if t.cpu_max_seq_len is not None and "data.max_seq_len" not in user_keys:
        wanted["data.max_seq_len"] = min(t.cpu_max_seq_len, run.data.max_seq_len)
    if t.cpu_val_size is not None and "data.val_size" not in user_keys:
        wanted["data.val_size"] = min(t.cpu_val_size, run.data.val_size)
    if e.tasks:  # eval=none scores nothing
        if e.cpu_tasks is not None and "eval.tasks" not in user_keys:
            wanted["eval.tasks"] = list(e.cpu_tasks)
        if e.cpu_limit is not None and e.limit is None:
            wanted["eval.limit"] = e.cpu_limit
        if e.cpu_batch_size is not None and "eval.batch_size" not in user_keys:
            wanted["eval.batch_size"] = e.cpu_batch_size
    groups = {"trainer": t, "data": run.data, "eval": e}
    sized = {}
    for key, value in wanted.items():
        group, name = key.split(".")
        configured = getattr(groups[group], name)
        if configured != value:
            sized[key] = {"configured": list(configured) if isinstance(configured, list) else configured, "applied": value}
    if not sized:
        return run, {}
    changes: dict = {"trainer": {}, "data": {}, "eval": {}}
    for key, change in sized.items():
        group, name = key.split(".")
        changes[group][name] = change["applied"]
    return dataclasses.replace(run, **{group: dataclasses.replace(groups[group], **values)
                                       for group, values in changes.items() if values}), sized


def sized_run(run: RunConfig, resolved_config: dict, device: str,
              user_keys: set[str] | None) -> tuple[RunConfig, dict, dict]:
    """The run (and its resolved config, for the record) after :func:`size_for_cpu`, and what it
    changed; unchanged without ``user_keys`` (outside ``python -m harness.run``:
    :func:`command_line_keys`)."""
    run, sized = size_for_cpu(run, device, user_keys) if user_keys is not None else (run, {})
    if sized:  # the record's config is what ran; the record's cpu_sizing keeps what was configured
        resolved_config = copy.deepcopy(resolved_config)
        for key, change in sized.items():
            group, name = key.split(".")
            resolved_config.setdefault(group, {})[name] = change["applied"]
    return run, resolved_config, sized


CHECKPOINT_NAME = "last"


def resume_checkpoint(run: RunConfig, run_dir: Path) -> Path | None:
    """The checkpoint ``trainer.resume`` points at: ``auto`` finds the run dir's own (None when
    there is none yet); a path must exist."""
    resume = run.trainer.resume
    if resume is None:
        return None
    if resume == "auto":
        path = Path(run_dir) / CHECKPOINT_DIR / f"{CHECKPOINT_NAME}.ckpt"
        return path if path.is_file() else None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise MissingPathError(f"trainer.resume={resume}: no such checkpoint file")
    return path


@dataclasses.dataclass
class Prepared:
    """A run checked and ready to build: what :func:`prepare` found before any weights load."""

    run: RunConfig  # as it goes: after CPU sizing
    resolved: dict  # the record's config: what ran
    cpu_sizing: dict  # what the CPU sizing changed (:func:`size_for_cpu`)
    device: str
    rank: int
    precision: str
    resume_path: Path | None
    resume_overrides: dict
    memory_estimate: dict
    arch: object  # the model's transformers config
    tokenizer: object
    splits: dict
    data_stats: dict
    total_steps: int
    schedule_note: str | None

    @property
    def cuda_graphs(self) -> bool:
        """Whether the compiled blocks replay CUDA graphs (:func:`harness.speed.uses_cuda_graphs`)."""
        return speed.uses_cuda_graphs(self.run.trainer)


def run_training(run: RunConfig, resolved_config: dict, run_dir: Path, warmup_steps: int | None = None) -> RunRecord:
    """Train one run, once, and write its record. Returns the record (status ok, or as
    :data:`OUTCOMES` maps how it ended). ``warmup_steps``: optimizer steps the steady-state rate
    leaves out (None: :class:`harness.measure.MeasureCallback`'s default).

    User errors raise before any model weights load; later failures become records.
    """
    started = time.perf_counter()
    startup_seconds = measure.process_age_seconds()  # imports and composing, before this function
    p = prepare(run, resolved_config, run_dir)
    record = opening_record(p, run_dir, startup_seconds)
    peaks = measure.PhasePeaks(p.device)
    measure_cb = measure.MeasureCallback(warmup_steps, peaks=peaks)
    module, loggers = None, []
    try:
        loggers = tracking.build_loggers(p.run.logger, run_dir, p.resolved) if p.rank == 0 else []
        model = build_model(p, run_dir, record)
        module, datamodule, trainer = build_loop(p, run_dir, model, measure_cb, loggers)
        record["setup_seconds"] = time.perf_counter() - started  # data, estimate, model, adapter
        if p.run.eval.tasks and p.rank == 0:
            base = score_base(model, p, run_dir, peaks)
            if base is not None:
                record["eval_base"] = base
        fit(trainer, module, datamodule, p, record)
        model = gather(trainer, model, p, peaks, measure_cb, record)
        if p.rank != 0:
            record.update(status=Status.ok, rank=p.rank)
            return record
        save_and_score(model, p, run_dir, peaks, record)
        record.status = Status.ok
    except USER_ERRORS:
        raise
    except (Exception, RunInterrupted) as exc:  # any other end is data for the record, not a lost run
        record.update(outcome(exc))
        if record.status == Status.oom:
            record["oom_in_training"] = measure_cb.train_start is not None and measure_cb.train_end is None
    finally:
        STOP.hold()  # a signal from here on (a second SIGTERM, Ctrl-C again) waits for the record
        leaving = sys.exc_info()[1]
        if leaving is not None and record.status == Status.failed and record.error is None:
            # An end the except clause did not record: a second signal while it ran, or a
            # BaseException from a library (SystemExit, KeyboardInterrupt). A GPU trial's record
            # once said failed with no reason.
            record.update(outcome(leaving))
        finish_record(record, module, p, peaks, measure_cb, started)
        if p.rank == 0:
            tracking.finish_loggers(loggers, record)
            stamp(record, trial_info())
            write_record(run_dir, record)
        STOP.release()
    return record


def prepare(run: RunConfig, resolved_config: dict, run_dir: Path) -> Prepared:
    """Device, ranks, CPU sizing and precision; every check that needs no weights (quantization,
    adapter init, the resume checkpoint's config, data, eval tasks, the estimate, liger, the
    vocabulary); then the data's splits and the step plan. User errors raise here."""
    device = pick_device(run.trainer.accelerator)
    run, resolved_config, cpu_sized = sized_run(run, resolved_config, device, command_line_keys())
    # With several devices Lightning starts one process per device, each running run_training;
    # rank 0 alone scores, saves and writes the record.
    rank, local_rank = process_ranks()
    if run.trainer.devices > 1 and device == "cuda":
        if torch.cuda.device_count() < run.trainer.devices:
            raise ConfigError(f"trainer.devices={run.trainer.devices}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        torch.cuda.set_device(local_rank)  # before any weights load, so each process fills its own GPU
    precision = resolve_precision(run.trainer.precision, device, run.adapter.kind)
    if run.adapter.kind == "full" and precision in ("bf16-true", "16-true"):
        log.warning("trainer.precision=%s with adapter=full: updates smaller than half a 16-bit step round away "
                    "(most of them at lr %g); trainer.precision=bf16-mixed keeps fp32 master weights", precision, run.optimizer.lr)
    models.check_quant_supported(run.quant, device)
    adapters.check_init_supported(run.adapter, device)
    optimizer_class(run.optimizer)  # an optimizer whose package is missing fails before any data or weights load
    scheduler_function(run.scheduler)
    resume_path = resume_checkpoint(run, run_dir)
    resume_overrides = check_resume_config(resume_path, resolved_config, run.trainer.resume_override)
    loaded = data.load_examples(run.data)  # data errors first: parsing is cheap, loading models is not
    if run.eval.tasks:
        evaluate.check_tasks(run.eval.tasks)
    # The dry-run estimate builds the model on the meta device, which also checks the targets.
    estimate = estimate_run(run, device)
    arch = models.load_config(run.model)
    if run.trainer.liger_kernels:
        speed.check_liger_kernels(device, arch.model_type)
    tokenizer = models.load_tokenizer(run.model)
    models.check_vocab(tokenizer, arch)
    splits, data_stats = data.build_splits(run.data, tokenizer, loaded)
    total_steps, schedule_note = plan_steps(run, data_stats["n_train"], device, cpu_sized)
    if schedule_note:
        log.warning(schedule_note)
    return Prepared(run=run, resolved=resolved_config, cpu_sizing=cpu_sized, device=device, rank=rank,
                    precision=precision, resume_path=resume_path, resume_overrides=resume_overrides,
                    memory_estimate=estimate["memory_estimate"], arch=arch, tokenizer=tokenizer, splits=splits,
                    data_stats=data_stats, total_steps=total_steps, schedule_note=schedule_note)


def opening_record(p: Prepared, run_dir: Path, startup_seconds: float) -> RunRecord:
    """The record as it stands before any weights load: status ``failed`` until the run ends."""
    return RunRecord(
        status=Status.failed, config=p.resolved, run_dir=str(run_dir), seed=p.run.seed, device=device_info(p.device),
        precision=p.precision, versions=versions(), git_sha=git_sha(), data=p.data_stats,
        planned_steps=p.total_steps, memory_estimate=p.memory_estimate, schedule_note=p.schedule_note,
        cpu_sizing=p.cpu_sizing, adapter_path=None, model_path=None, error=None,
        resumed_from=str(p.resume_path) if p.resume_path else None, resume_overrides=p.resume_overrides or None,
        startup_seconds=startup_seconds,
    )


def build_model(p: Prepared, run_dir: Path, record: RunRecord):
    """The base model with its adapter (and the speed switches that patch them), in training
    mode; the record gets the parameter counts."""
    run = p.run
    L.seed_everything(run.seed, workers=True, verbose=False)
    model = models.build_model(run.model, run.quant, p.precision, p.device)
    if run.trainer.liger_kernels:
        speed.apply_liger_kernels(model, run.adapter, p.device)
    model = adapters.apply_adapter(model, run.adapter, run.trainer.gradient_checkpointing,
                                   adapters.init_examples(run.adapter, p.splits["train"]), p.tokenizer.pad_token_id,
                                   init_dir=run_dir / adapters.INIT_DIR if run.trainer.save_weights and p.rank == 0 else None)
    if run.trainer.recompute_lora_dropout:
        log.info("recompute_lora_dropout: %d LoRA dropouts redrawn in backward", speed.recompute_lora_dropout(model))
    model.train()  # from_pretrained returns eval mode, which would silence LoRA dropout
    trainable, total = adapters.count_parameters(model)
    record.update(trainable_params=trainable, total_params=total)
    log.info("trainable params: %s of %s (%.3f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


def build_loop(p: Prepared, run_dir: Path, model, measure_cb: measure.MeasureCallback, loggers: list):
    """The LightningModule (its blocks compiled with ``trainer.compile``), the data module and
    Lightning's Trainer with the harness's callbacks."""
    run, t = p.run, p.run.trainer
    if t.compile:
        speed.compile_blocks(model, t.compile_mode)
    module = FineTuneModule(model, run.optimizer, run.scheduler, p.total_steps, shard=t.strategy == "fsdp")
    module.run_config, module.reapply_hparams = p.resolved, bool(p.resume_overrides)
    # CUDA graphs record a graph per batch shape: a few widths keep them few.
    datamodule = batches.InstructionDataModule(p.splits, p.tokenizer.pad_token_id, t.micro_batch_size, run.seed,
                                               run.data.num_workers, widths=speed.batch_widths(t, run.data.max_seq_len))
    # A run shorter than an epoch gets a shorter epoch, so the progress bar shows its real length.
    epoch_batches = min(math.ceil(len(p.splits["train"]) / (t.micro_batch_size * t.devices)),
                        p.total_steps * t.accumulate_grad_batches)
    # Lightning counts the validation interval in micro-batches, within one epoch.
    val_interval = min(t.val_every_n_steps * t.accumulate_grad_batches, epoch_batches) if t.val_every_n_steps else None
    trainer = L.Trainer(
        accelerator="gpu" if p.device == "cuda" else "cpu",
        devices=t.devices,
        strategy=training_strategy(t),
        precision=p.precision,
        max_epochs=-1 if t.max_steps is not None else t.epochs,  # max_steps overrides epochs
        max_steps=p.total_steps,
        limit_train_batches=epoch_batches,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.max_grad_norm,
        logger=loggers or False,
        callbacks=[measure_cb, measure.HostMetricsBar(measure_cb, refresh_rate=t.accumulate_grad_batches),
                   *checkpoint_callbacks(run, run_dir), *trial_callbacks(), *fault_callbacks(run.fault),
                   StopAtStep(stop_checkpoint(run, run_dir)), *([speed.cuda_graph_guard()] if p.cuda_graphs else [])],
        enable_checkpointing=t.checkpoint_every_n_steps is not None,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=val_interval,
        # Without an interval, validation runs only before and after fit (below).
        check_val_every_n_epoch=None if val_interval else t.epochs + 1,
        default_root_dir=str(run_dir),
    )
    return module, datamodule, trainer


def score_base(model, p: Prepared, run_dir: Path, peaks: measure.PhasePeaks) -> dict | None:
    """The base model's scores (:func:`harness.scoring.base_scores`, cached), before training:
    the adapter is then the identity (LoRA B = 0), so this model is the base. None where the
    model is not scored in-process (:func:`harness.scoring.scores_in_process`)."""
    if evaluate.HELDOUT_TASK in p.run.eval.tasks:
        evaluate.write_heldout(p.splits["test"], p.tokenizer, run_dir / evaluate.HELDOUT_FILE)
    scores = None
    if scoring.scores_in_process(p.run):
        speed.eager_blocks(model, p.cuda_graphs)  # forward-only: see eager_blocks
        with peaks.phase("eval"):
            scores = scoring.base_scores(model, p.tokenizer, p.run, p.precision, p.device, run_dir)
        speed.eager_blocks(model, False)
    # lm-eval reseeds the global RNGs; reseed so training depends neither on the cache nor on
    # whether the base was scored here.
    L.seed_everything(p.run.seed, workers=True, verbose=False)
    return scores


def fit(trainer, module: FineTuneModule, datamodule, p: Prepared, record: RunRecord) -> None:
    """Training, from the resume checkpoint when there is one, with a validation pass before and
    after it (when there is a validation split)."""
    if p.splits["val"] and p.resume_path is None:  # a resumed run has its first val loss in the checkpoint
        trainer.validate(module, datamodule=datamodule, verbose=False)
    # weights_only: a checkpoint is data, never code to run.
    trainer.fit(module, datamodule=datamodule, ckpt_path=p.resume_path, weights_only=True)
    if p.resume_path is not None:
        record["resumed_at_step"] = module.resumed_at_step
    if p.splits["val"]:
        trainer.validate(module, datamodule=datamodule, verbose=False)


def gather(trainer, model, p: Prepared, peaks: measure.PhasePeaks, measure_cb, record: RunRecord):
    """After training on several devices (every process calls it): each device's peaks at
    rank 0, and under FSDP the whole trained model at rank 0. Returns the model rank 0 saves
    and scores."""
    t = p.run.trainer
    if t.devices > 1:
        record.update(gather_device_peaks(trainer, peaks, measure_cb))
    if t.strategy == "fsdp":
        # Every process sends its shards; rank 0 gets the whole state on the CPU.
        gathered = trainer.strategy.lightning_module_state_dict()
        if p.rank == 0:
            model = unsharded_model(p.run, p.precision, p.device, gathered)
        del gathered
    return model


def save_and_score(model, p: Prepared, run_dir: Path, peaks: measure.PhasePeaks, record: RunRecord) -> None:
    """Rank 0, after training: the adapter (or model) saved, and the trained model scored."""
    run = p.run
    if run.trainer.save_weights:
        save_trained(model, p.tokenizer, run, run_dir, record)
    if run.eval.tasks:
        eval_started = time.perf_counter()
        if p.cuda_graphs:  # forward-only (see eager_blocks), and trained: the graphs' memory goes to scoring
            speed.release_compiled(model)
        with peaks.phase("eval"):
            record.update(scoring.score_trained(model, p.tokenizer, run, p.precision, p.device, run_dir,
                                                record.get("eval_base"), record["adapter_path"]))
        record["eval_seconds"] = time.perf_counter() - eval_started


def _interrupted(exc: RunInterrupted) -> dict:
    return {"signal": exc.name, "error": str(exc), "checkpoint": str(exc.checkpoint) if exc.checkpoint else None}


# How a run that raised ends, first match: the exception's type, the record's status, and what
# else the record says of it. User errors are not here: they raise on (exit code 2, no record).
OUTCOMES = (
    (RunInterrupted, Status.interrupted, _interrupted),  # SIGTERM/SIGINT: a checkpoint to resume from, when checkpointing is on
    (DivergedError, Status.diverged, lambda exc: {"error": str(exc)}),
    (PrunedError, Status.pruned, lambda exc: {"error": str(exc)}),
    (torch.cuda.OutOfMemoryError, Status.oom, lambda exc: {"error": str(exc).splitlines()[0]}),
    (Exception, Status.failed, lambda exc: {"error": f"{type(exc).__name__}: {exc}",
                                            "traceback": "".join(traceback.format_exception(exc))[-4000:]}),
    # Python's own SIGINT (a library restored the default handler): as our signal handling records it.
    (KeyboardInterrupt, Status.interrupted, lambda exc: {"signal": "SIGINT", "error": "stopped by SIGINT; run it again"}),
    (BaseException, Status.failed, lambda exc: {"error": f"{type(exc).__name__} raised inside the run: {exc}"}),
)


def outcome(exc: BaseException) -> dict:
    """The record's ``status`` and error fields for a run that ended by raising ``exc`` (:data:`OUTCOMES`)."""
    return next({"status": status, **fields(exc)} for kind, status, fields in OUTCOMES if isinstance(exc, kind))


def finish_record(record: RunRecord, module: FineTuneModule | None, p: Prepared, peaks: measure.PhasePeaks,
                  measure_cb: measure.MeasureCallback, started: float) -> None:
    """The record's measurements and losses, however the run ended."""
    if module is not None:
        # The last step's loss is still on its way to the host when training stopped early
        # (pruned, failed); a broken device must not cost the record, so errors are dropped.
        with contextlib.suppress(Exception):
            module.record_losses()
    if measure_cb.train_start is not None and "train" not in peaks.phases:
        peaks.end("train")  # training stopped early (oom, crash): its peak so far
    record.update(peaks.snapshot())
    record["train_seconds"] = measure_cb.train_seconds
    record["total_seconds"] = time.perf_counter() - started
    if "total_params" in record:
        record.update(measure.throughput(measure_cb, record["total_params"], record["trainable_params"], p.arch,
                                         measure.gpu_peak_flops(p.run.trainer.peak_tflops) if p.device == "cuda" else None))
    record.update(loss_fields(module.train_losses if module else [], module.val_losses if module else []))


def loss_fields(train_losses: list[float], val_losses: list[float]) -> dict:
    """The record's loss fields: the step count, first/last/best of each curve, the curves."""
    return {"optimizer_steps": len(train_losses), **loss_summary(train_losses, "train"),
            **loss_summary(val_losses, "val"), "train_losses": train_losses, "val_losses": val_losses}


def process_ranks() -> tuple[int, int]:
    """(global rank, local rank) of this process: 0, 0 unless Lightning started it for a device
    (its launcher sets LOCAL_RANK in the environment of the processes it starts)."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    return int(os.environ.get("RANK", local)), local


def training_strategy(t):
    """Lightning's strategy: DDP on several devices (each holds the model; gradients averaged),
    or FSDP2 sharding over them (Lightning's ModelParallelStrategy; the module shards itself in
    ``configure_model``)."""
    if t.devices == 1:
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

    if t.strategy == "fsdp":
        return ModelParallelStrategy(data_parallel_size=t.devices, tensor_parallel_size=1, save_distributed_checkpoint=False)
    return DDPStrategy()


def unsharded_model(run: RunConfig, precision: str, device: str, lightning_state: dict):
    """A fresh (unsharded) copy of the run's model holding the trained weights gathered from
    every device, for saving and scoring after FSDP training."""
    model = models.build_model(run.model, run.quant, precision, device)
    model = adapters.apply_adapter(model, adapters.counting_config(run.adapter), False)  # the weights come next
    model.load_state_dict({key.removeprefix("model."): value for key, value in lightning_state.items()}, strict=True)
    return model


def gather_device_peaks(trainer, peaks: measure.PhasePeaks, measure_cb) -> dict:
    """Every device's peak memory (and tokens trained) at rank 0; every process must call it."""
    snap = peaks.snapshot()
    # On the process's own device (NCCL gathers only GPU tensors; the fitted module is back on the CPU).
    mine = torch.tensor([snap.get("peak_gpu_allocated_bytes", 0), snap.get("peak_gpu_reserved_bytes", 0),
                         snap["peak_rss_bytes"], measure_cb.tokens], dtype=torch.int64, device=trainer.strategy.root_device)
    rows = trainer.strategy.all_gather(mine).reshape(-1, 4).tolist()
    per_device = [{"rank": i, "peak_gpu_allocated_bytes": a or None, "peak_gpu_reserved_bytes": r or None,
                   "peak_gpu_allocated_gib": round(a / measure.GIB, 3) if a else None, "peak_rss_bytes": rss,
                   "train_tokens_seen": tokens} for i, (a, r, rss, tokens) in enumerate(rows)]
    seconds = measure_cb.train_seconds
    out = {"world_size": len(rows), "per_device_memory": per_device}
    if seconds:
        out["tokens_per_s_all_devices"] = round(sum(r[3] for r in rows) / seconds, 2)
    return out


def checkpoint_callbacks(run: RunConfig, run_dir: Path) -> list:
    """Lightning's ModelCheckpoint keeping one resumable ``last.ckpt`` (written atomically)."""
    every = run.trainer.checkpoint_every_n_steps
    if every is None:
        return []
    from lightning.pytorch.callbacks import ModelCheckpoint

    return [ModelCheckpoint(dirpath=Path(run_dir) / CHECKPOINT_DIR, filename=CHECKPOINT_NAME, every_n_train_steps=every,
                            save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=False)]


def stop_checkpoint(run: RunConfig, run_dir: Path) -> Path | None:
    """Where a run stopped by a signal saves its checkpoint: the periodic one's file, or None
    when checkpointing is off."""
    if run.trainer.checkpoint_every_n_steps is None:
        return None
    return Path(run_dir) / CHECKPOINT_DIR / f"{CHECKPOINT_NAME}.ckpt"


def save_trained(model, tokenizer, run: RunConfig, run_dir: Path, record: RunRecord) -> None:
    """Adapter in PEFT format (``adapter/``), or the whole model for full fine-tuning (``model/``)."""
    target = run_dir / ("model" if run.adapter.kind == "full" else "adapter")
    adapters.save_adapter(model, target, run.adapter, run_dir)
    record["model_path" if run.adapter.kind == "full" else "adapter_path"] = str(target)
    tokenizer.save_pretrained(target)


def device_info(device: str) -> dict:
    """The record's ``device``: its type, the torch threads, and the GPU's name, memory and capability."""
    info = {"type": device, "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, total_memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}",
                    cuda=torch.version.cuda)
    else:
        import platform

        info["name"] = platform.processor() or platform.machine()
    return info
