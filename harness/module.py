"""The thin LightningModule, and the optimizer and scheduler builders it uses."""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import lightning as L
import torch
from torch import nn

from .batches import model_inputs
from .measure import LossInFlight
from .models import decoder_blocks
from .schema import ConfigError, OptimizerConfig, SchedulerConfig
from .signals import STOP, RunInterrupted

log = logging.getLogger(__name__)


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def param_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict]:
    """Trainable parameters grouped by learning rate: ``cfg.lr_ratios`` maps a substring of the
    parameter name to an lr multiplier (first match wins), e.g. ``lora_B: 16`` for LoRA+."""
    groups: dict[float, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        ratio = next((r for key, r in cfg.lr_ratios.items() if key in name), 1.0)
        groups.setdefault(ratio, []).append(param)
    unmatched = [key for key in cfg.lr_ratios if not any(key in n for n, p in model.named_parameters() if p.requires_grad)]
    if unmatched:
        raise ConfigError(f"optimizer.lr_ratios: no trainable parameter name contains {', '.join(unmatched)}")
    return [{"params": params, "lr": cfg.lr * ratio} for ratio, params in groups.items()]


def optimizer_class(cfg: OptimizerConfig) -> type:
    """The class ``cfg.target`` names; a ConfigError saying what to install when it cannot be imported."""
    from hydra.utils import get_class

    try:
        return get_class(cfg.target)
    except Exception as exc:  # hydra wraps the ImportError of a missing package
        hint = f" ({cfg.requires})" if cfg.requires else ""
        raise ConfigError(f"optimizer={cfg.name}: cannot import {cfg.target}{hint}") from exc


def build_optimizer(model: nn.Module, cfg: OptimizerConfig, allow_fused: bool = True) -> torch.optim.Optimizer:
    """``cfg.target`` over the trainable parameters (:func:`param_groups`), given those of lr, betas,
    eps, weight decay, momentum and rho that its constructor takes. On CUDA it is the fused kernel
    where ``cfg.fused`` and the class has one, unless ``allow_fused`` is false
    (:func:`fused_optimizer_allowed`)."""
    import inspect

    groups = param_groups(model, cfg)
    cls = optimizer_class(cfg)
    accepted = inspect.signature(cls).parameters
    hparams = {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps, "weight_decay": cfg.weight_decay,
               "momentum": cfg.momentum, "rho": cfg.rho}
    kwargs = {key: value for key, value in hparams.items() if key in accepted}
    if cfg.fused and "fused" in accepted:
        on_cuda = next(iter(groups[0]["params"])).is_cuda if groups else False
        kwargs["fused"] = (on_cuda and allow_fused) or None
    return cls(groups, **kwargs)


def fused_optimizer_allowed(trainer) -> bool:
    """False where Lightning refuses a fused optimizer: its mixed-precision plugin (``*-mixed``,
    i.e. full fine-tuning with fp32 master weights) will not clip the gradients of an optimizer
    that unscales them itself, so clipping there needs the unfused (foreach) AdamW."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    return not (isinstance(trainer.precision_plugin, MixedPrecision) and (trainer.gradient_clip_val or 0) > 0)


# transformers' schedules a per-step run cannot take: they step on a metric or need arguments of their own.
NOT_PER_STEP = ("reduce_lr_on_plateau", "greedy")


def scheduler_function(cfg: SchedulerConfig):
    """transformers' function for ``cfg.type``; a ConfigError naming the types there are."""
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION

    functions = {str(getattr(kind, "value", kind)): fn for kind, fn in TYPE_TO_SCHEDULER_FUNCTION.items()}
    usable = [kind for kind in functions if kind not in NOT_PER_STEP]
    if cfg.type not in usable:
        raise ConfigError(f"scheduler.type: got {cfg.type!r}, expected one of {', '.join(usable)}")
    return functions[cfg.type]


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, total_steps: int):
    """transformers' ``cfg.type`` schedule, stepped per optimizer step: ``cfg.warmup_steps`` of
    linear warmup (at most the run's steps less one), then the schedule over the rest of the run,
    given ``cfg.min_lr_ratio`` where it takes a floor."""
    import inspect

    from transformers import get_scheduler

    takes = inspect.signature(scheduler_function(cfg)).parameters
    floor = {key: cfg.min_lr_ratio for key in ("min_lr_rate", "min_lr_ratio") if key in takes}
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    return get_scheduler(cfg.type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps,
                         scheduler_specific_kwargs=floor or None)


class FineTuneModule(L.LightningModule):
    """Trains a (peft-wrapped) causal LM on batches of input_ids/attention_mask/labels.

    Losses are kept per optimizer step on the host for the record; a non-finite loss stops the
    run with :class:`DivergedError` one optimizer step later (see ``on_before_optimizer_step``).
    ``shard``: FSDP2 per decoder block when Lightning sets up the model (:func:`shard_blocks`,
    with ``trainer.strategy=fsdp``). Compilation and CUDA graphs are :mod:`harness.speed`'s.
    """

    def __init__(self, model: nn.Module, optimizer_cfg: OptimizerConfig, scheduler_cfg: SchedulerConfig, total_steps: int,
                 shard: bool = False):
        super().__init__()
        self.model = model
        self.shard = shard
        self._sharded = False
        self.optimizer_cfg = optimizer_cfg
        self.scheduler_cfg = scheduler_cfg
        self.total_steps = total_steps
        self.train_losses: list[float] = []  # one per optimizer step (mean over its micro-batches)
        self.val_losses: list[float] = []  # one per validation pass
        self._pending: list[torch.Tensor] = []
        # The last optimizer step's mean loss on its way to the host (read at the next step).
        self._in_flight: LossInFlight | None = None
        self._last_batch: dict[str, torch.Tensor] | None = None
        self._rng_to_restore: dict | None = None
        self.resumed_at_step: int | None = None
        # The run's resolved config, saved in each checkpoint so a resume can be checked against
        # it (:func:`resume_config_changes`); with ``reapply_hparams`` (trainer.resume_override)
        # the restored optimizer takes this run's hyperparameters, not the checkpoint's.
        self.run_config: dict | None = None
        self.reapply_hparams = False
        self._fresh_hparams: list[dict] = []
        # Checkpoints hold only the trainable weights; the frozen base reloads from its source.
        self.strict_loading = False

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # model_inputs sets use_cache=False: training needs no KV cache; building one costs memory,
        # and under torch.compile its per-layer state forces recompiles until compilation gives up.
        return self.model(**model_inputs(batch), labels=batch["labels"]).loss

    def training_step(self, batch, batch_idx):
        loss = self(batch)
        self._pending.append(loss.detach())
        # For the loggers only (they read it every log_every_n_steps): the progress bar shows the
        # host copy, since turning a GPU tensor into a number for the bar waits for the GPU.
        self.log("train_loss", loss, on_step=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def on_before_optimizer_step(self, optimizer):
        # The mean loss of this optimizer step goes to the host without waiting (LossInFlight);
        # the previous step's copy is read and checked now. Every rank checks at the same step.
        if not self._pending:
            return
        loss = torch.stack(self._pending).mean()
        if self.trainer.world_size > 1:
            # Every device records (and checks) the same mean loss, so all stop together.
            loss = self.trainer.strategy.reduce(loss, reduce_op="mean")
        self._pending.clear()
        self.record_losses()  # the progress bar shows it (measure.HostMetricsBar)
        self._in_flight = LossInFlight(self.global_step, loss)

    def record_losses(self) -> None:
        """Append the loss copied at the last optimizer step, if one is in flight, to
        ``train_losses``; raise :class:`DivergedError` if it is not finite."""
        if self._in_flight is None:
            return
        in_flight, self._in_flight = self._in_flight, None
        loss = in_flight.read()
        if not math.isfinite(loss):
            raise DivergedError(f"training loss became {loss} at optimizer step {in_flight.step}")
        self.train_losses.append(loss)

    def on_train_end(self):
        self.record_losses()

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if hasattr(_unwrap(optimizer), "update_hessian"):
            self._update_sophia_hessian(optimizer)

    def _update_sophia_hessian(self, optimizer, every: int = 10) -> None:
        """Sophia's Gauss-Newton-Bartlett Hessian estimate: every ``every`` steps, the gradient
        of the loss on labels sampled from the model's own predictions."""
        if self.global_step % every != 0 or self._last_batch is None:
            return
        batch = self._last_batch
        logits = self.model(**model_inputs(batch)).logits
        sampled = torch.distributions.Categorical(logits=logits.float().detach()).sample()
        loss = nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), sampled.view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _unwrap(optimizer).update_hessian()
        optimizer.zero_grad(set_to_none=True)

    def on_train_batch_start(self, batch, batch_idx):
        self._last_batch = batch
        if self._rng_to_restore is not None:
            # Restored at the first step after resume, where the interrupted run would draw next.
            torch.set_rng_state(self._rng_to_restore["cpu"])
            if self._rng_to_restore.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state(self._rng_to_restore["cuda"])
            self._rng_to_restore = None

    def on_save_checkpoint(self, checkpoint):
        self.record_losses()
        trainable = {name for name, param in self.named_parameters() if param.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["harness"] = {
            "train_losses": list(self.train_losses),
            "val_losses": list(self.val_losses),
            "rng": {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None},
            "config": self.run_config,
        }

    def on_load_checkpoint(self, checkpoint):
        trainable = {name for name, param in self.named_parameters() if param.requires_grad}
        missing = trainable - set(checkpoint["state_dict"])
        if missing:
            raise ValueError(f"checkpoint does not match this run: {len(missing)} trainable tensors missing "
                             f"(e.g. {sorted(missing)[0]}); was it saved with another adapter config?")
        state = checkpoint.get("harness", {})
        self.train_losses = list(state.get("train_losses", []))
        self.val_losses = list(state.get("val_losses", []))
        self._rng_to_restore = state.get("rng")
        self.resumed_at_step = int(checkpoint.get("global_step", 0))

    def validation_step(self, batch, batch_idx):
        loss = self(batch)
        self.log("val_loss", loss, prog_bar=True, on_epoch=True, batch_size=batch["input_ids"].shape[0], sync_dist=True)
        return loss

    def on_validation_epoch_end(self):
        value = self.trainer.callback_metrics.get("val_loss")
        if value is not None and not self.trainer.sanity_checking:
            self.val_losses.append(float(value))

    def configure_model(self):
        # Lightning calls this before every validate and fit; the model is sharded once.
        if self.shard and not self._sharded:
            shard_blocks(self.model, self.device_mesh["data_parallel"])
            self._sharded = True

    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.optimizer_cfg, allow_fused=fused_optimizer_allowed(self.trainer))
        scheduler = build_scheduler(optimizer, self.scheduler_cfg, self.total_steps)
        # This run's hyperparameters, before a checkpoint's optimizer state replaces them.
        self._fresh_hparams = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self):
        if self.reapply_hparams and self.resumed_at_step is not None:
            self._reapply_hparams()

    def _reapply_hparams(self) -> None:
        """After a resume with ``trainer.resume_override``: loading the checkpoint restored the old
        run's learning rates, weight decay and betas into the optimizer and its base lrs into the
        scheduler; put this run's back (the moments and the step count stay), at the restored step
        of this run's schedule."""
        optimizer = _unwrap(self.trainer.optimizers[0])
        scheduler = self.trainer.lr_scheduler_configs[0].scheduler
        if len(optimizer.param_groups) != len(self._fresh_hparams):
            raise ConfigError("trainer.resume_override: the checkpoint's optimizer has another number of parameter "
                              "groups (optimizer.lr_ratios changed); its state cannot take this run's settings")
        for group, fresh in zip(optimizer.param_groups, self._fresh_hparams, strict=True):
            group.update(fresh)
        scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
            group["lr"] = base * factor(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


# Keys of the resolved config that do not change what training computes: where it logs, what is
# scored afterwards, how often it checkpoints, validates or logs, how it resumes, the speed
# switches (each keeps the loss the same function), the device, fault injection, and the cpu_*
# sizes whose effect shows in the keys they size. A prefix covers the keys under it.
RESUME_NEUTRAL_KEYS = ("logger", "eval", "fault", "dry_run", "sweep", "data.num_workers", "trainer.resume",
                       "trainer.resume_override", "trainer.checkpoint_every_n_steps", "trainer.val_every_n_steps",
                       "trainer.log_every_n_steps", "trainer.save_weights", "trainer.peak_tflops", "trainer.accelerator",
                       "trainer.compile", "trainer.compile_mode", "trainer.graph_widths", "trainer.recompute_lora_dropout",
                       "trainer.liger_kernels", "trainer.gradient_checkpointing", "trainer.cpu_micro_batch_size",
                       "trainer.cpu_global_batch_size", "trainer.cpu_max_seq_len", "trainer.cpu_val_size",
                       "trainer.oom_retry", "optimizer.requires")


def flat_config(config: dict, prefix: str = "") -> dict:
    """A nested config as ``{dotted key: value}`` (lists and empty mappings are values)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# Keys an option's YAML sets together with its name (optimizer=sgd sets optimizer.target to
# torch.optim.SGD): a checkpoint saved before they existed trained as its option's name says, not
# as these keys' schema defaults, so their absence there is no change; optimizer.name and
# scheduler.name still are.
SET_BY_THE_OPTION = ("optimizer.target", "optimizer.states", "optimizer.state_bytes", "optimizer.shardable",
                     "optimizer.fused", "scheduler.type")


def is_resume_neutral(key: str) -> bool:
    """Whether a (dotted) config key leaves what training computes unchanged."""
    return any(key == n or key.startswith(n + ".") for n in RESUME_NEUTRAL_KEYS)


@functools.cache
def schema_defaults() -> dict:
    """The flattened defaults of every schema field (the values a newer key had before it existed)."""
    from omegaconf import OmegaConf

    from .schema import RunConfig

    config = OmegaConf.structured(RunConfig)
    return flat_config({k: OmegaConf.to_container(config[k], enum_to_str=True) for k in config  # closed sets as strings
                     if not OmegaConf.is_missing(config, k) and OmegaConf.is_config(config[k])})


def resume_config_changes(saved: dict, current: dict) -> dict:
    """``{key: {"checkpoint": old, "run": new}}`` for every key that changes what training
    computes (not in :data:`RESUME_NEUTRAL_KEYS`) and differs between a checkpoint's config
    and this run's."""
    old, new = flat_config(saved), flat_config(current)
    defaults = schema_defaults()
    changes = {}
    for key in sorted(set(old) | set(new)):
        if is_resume_neutral(key) or (key not in old and key in SET_BY_THE_OPTION):
            continue
        # A key the checkpoint's harness did not have yet trained as its default does now.
        a, b = old[key] if key in old else defaults.get(key), new.get(key)
        same = a == b or (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b))
        if not same:
            changes[key] = {"checkpoint": a, "run": b}
    return changes


def check_resume_config(path: Path | None, current: dict, override: bool) -> dict:
    """Compare the config a checkpoint was saved with to this run's, before any work.

    A key that changes the training function (:func:`resume_config_changes`) is refused with
    one line naming each, unless ``override`` (``trainer.resume_override=true``): then the run
    goes on with its own values, and the returned changes go in the record. A checkpoint that
    carries no config (saved by an older harness) is not checked; one that does not load is
    left to the resume itself, which records why.
    """
    if path is None:
        return {}
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # the load in trainer.fit fails the same way, into the record
        return {}
    saved = (checkpoint.get("harness") or {}).get("config") if isinstance(checkpoint, dict) else None
    del checkpoint
    if not isinstance(saved, dict):
        log.warning("%s carries no config (saved by an older harness): resuming without checking it", path)
        return {}
    changes = resume_config_changes(saved, current)
    if changes and not override:
        shown = "; ".join(f"{k} {v['checkpoint']!r} -> {v['run']!r}" for k, v in changes.items())
        raise ConfigError(f"trainer.resume={path}: the checkpoint was saved by a run with other settings ({shown}); "
                          "resume with the checkpoint's values, or set trainer.resume_override=true to continue "
                          "with these")
    if changes:
        log.warning("trainer.resume_override: continuing from %s with %s", path, ", ".join(changes))
    return changes


class StopAtStep(L.Callback):
    """SIGTERM or SIGINT during training stops the run at the end of the optimizer step under
    way (:data:`harness.signals.STOP` defers the signal while training), with a checkpoint of that
    step when checkpointing is on, by raising :class:`harness.signals.RunInterrupted`.

    Lightning's own SIGTERM handler (installed for each ``fit``) would stop at the end of any
    micro-batch, mid-accumulation, where no checkpoint resumes exactly (the accumulated
    gradients are not saved); so this callback puts the harness's handler back at the start of
    training.
    """

    def __init__(self, checkpoint_path: Path | None):
        self.checkpoint_path = checkpoint_path
        self._step = -1

    def on_train_start(self, trainer, pl_module):
        STOP.install(defer=True)
        self._step = trainer.global_step
        if STOP.signum is not None:  # arrived while fit was setting up
            self._stop(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self._step:
            return  # mid-accumulation: the step is not done
        self._step = trainer.global_step
        if STOP.signum is not None:
            self._stop(trainer)

    def on_train_end(self, trainer, pl_module):
        STOP.defer = False
        if STOP.signum is not None:
            self._stop(trainer)

    def on_exception(self, trainer, pl_module, exception):
        STOP.defer = False

    def _stop(self, trainer) -> None:
        STOP.defer = False
        saved = None
        if self.checkpoint_path is not None:
            trainer.save_checkpoint(self.checkpoint_path, weights_only=False)  # the whole training state
            saved = self.checkpoint_path
        raise RunInterrupted(STOP.signum, step=trainer.global_step, checkpoint=saved)


def shard_blocks(model: nn.Module, mesh) -> int:
    """FSDP2: ``fully_shard`` each decoder block, then the whole model (embeddings, final norm,
    head), over ``mesh``. Each block's weights are gathered just before it runs and freed after,
    so a device holds its shard of everything plus about one whole block. Returns the block count."""
    from torch.distributed.fsdp import fully_shard

    blocks = decoder_blocks(model)
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return len(blocks)


def _unwrap(optimizer):
    """The torch optimizer inside Lightning's LightningOptimizer wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def steps_per_epoch(n_train: int, micro_batch_size: int, accumulate: int) -> int:
    """Optimizer steps in one epoch (a last partial accumulation still steps)."""
    return max(1, math.ceil(math.ceil(n_train / micro_batch_size) / accumulate))
