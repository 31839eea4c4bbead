"""The ``trainer`` group's schema: the training schedule, the hardware, the speed switches and
the CPU sizing. Part of the run schema (:class:`harness.schema.RunConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .schema_rules import choice, closed_set, require

Precision = closed_set("Precision", ("auto", "bf16-true", "bf16-mixed", "16-mixed", "32-true"), __name__)
Accelerator = closed_set("Accelerator", ("auto", "cpu", "gpu", "cuda"), __name__)
Strategy = closed_set("Strategy", ("auto", "ddp", "fsdp"), __name__)


# The compile modes whose compiled blocks replay CUDA graphs.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def uses_cuda_graphs(trainer) -> bool:
    """Whether the compiled blocks replay CUDA graphs (``trainer.compile_mode`` of
    :data:`CUDA_GRAPH_MODES`): batches then take a few widths (:func:`harness.speed.batch_widths`),
    and forward-only passes run eagerly."""
    return trainer.compile and trainer.compile_mode in CUDA_GRAPH_MODES


CompileMode = closed_set("CompileMode", ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                         __name__)


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
    padded to one of ``graph_widths`` evenly spaced widths up to ``data.max_seq_len`` (one graph
    recorded per shape; 1: every batch ``data.max_seq_len`` wide), and under gradient
    accumulation the first micro-batch's gradients are copied out of graph memory
    (docs/benchmarks.md).
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
    precision: Precision = Precision.auto
    gradient_checkpointing: bool = False
    max_grad_norm: float | None = 1.0
    val_every_n_steps: int | None = None
    log_every_n_steps: int = 1
    accelerator: Accelerator = Accelerator.auto
    devices: int = 1
    strategy: Strategy = Strategy.auto
    peak_tflops: float | None = None
    checkpoint_every_n_steps: int | None = None
    resume: str | None = None
    resume_override: bool = False
    compile: bool = False
    compile_mode: CompileMode = CompileMode.default
    graph_widths: int = 1
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
        require(self.checkpoint_every_n_steps is None or self.checkpoint_every_n_steps > 0,
                 "trainer.checkpoint_every_n_steps", f"must be > 0 or null, got {self.checkpoint_every_n_steps}")
        require(self.resume is None or str(self.resume).strip() != "", "trainer.resume", "must be auto, a checkpoint path, or null")
        require(not self.resume_override or self.resume is not None, "trainer.resume_override",
                 "takes effect only when resuming; set trainer.resume=auto or a checkpoint path")
        require(self.epochs > 0, "trainer.epochs", f"must be > 0, got {self.epochs}")
        require(self.max_steps is None or self.max_steps > 0, "trainer.max_steps", f"must be > 0 or null, got {self.max_steps}")
        require(self.cpu_max_steps is None or self.cpu_max_steps > 0, "trainer.cpu_max_steps", f"must be > 0 or null, got {self.cpu_max_steps}")
        require(self.micro_batch_size > 0, "trainer.micro_batch_size", f"must be > 0, got {self.micro_batch_size}")
        require(self.global_batch_size > 0, "trainer.global_batch_size", f"must be > 0, got {self.global_batch_size}")
        require(self.devices > 0, "trainer.devices", f"must be > 0, got {self.devices}")
        self.strategy = choice(self.strategy, "trainer.strategy", Strategy)
        require(self.strategy != "fsdp" or self.devices > 1, "trainer.strategy",
                 "fsdp shards the model over several devices; set trainer.devices > 1")
        require(self.strategy != "fsdp" or not self.compile, "trainer.compile",
                 "not supported with trainer.strategy=fsdp yet")
        per_step = self.micro_batch_size * self.devices
        require(
            self.global_batch_size % per_step == 0,
            "trainer.global_batch_size",
            f"{self.global_batch_size} is not a multiple of trainer.micro_batch_size={self.micro_batch_size}"
            + (f" x trainer.devices={self.devices}" if self.devices > 1 else ""),
        )
        require(self.devices == 1 or (self.checkpoint_every_n_steps is None and self.resume is None),
                 "trainer.checkpoint_every_n_steps", "resumable checkpoints support one device so far")
        self.compile_mode = choice(self.compile_mode, "trainer.compile_mode", CompileMode)
        require(self.compile or self.compile_mode == "default", "trainer.compile_mode",
                 f"{self.compile_mode} takes effect only with trainer.compile=true")
        require(self.graph_widths > 0, "trainer.graph_widths", f"must be > 0, got {self.graph_widths}")
        require(self.graph_widths == 1 or uses_cuda_graphs(self),
                "trainer.graph_widths", "takes effect only under CUDA graphs: set trainer.compile=true "
                "trainer.compile_mode=reduce-overhead")
        self.precision = choice(self.precision, "trainer.precision", Precision)
        self.accelerator = choice(self.accelerator, "trainer.accelerator", Accelerator)
        require(self.max_grad_norm is None or self.max_grad_norm > 0, "trainer.max_grad_norm", f"must be > 0 or null, got {self.max_grad_norm}")
        require(self.val_every_n_steps is None or self.val_every_n_steps > 0, "trainer.val_every_n_steps", f"must be > 0 or null, got {self.val_every_n_steps}")
        require(self.log_every_n_steps > 0, "trainer.log_every_n_steps", f"must be > 0, got {self.log_every_n_steps}")
        for key in ("cpu_micro_batch_size", "cpu_global_batch_size"):
            value = getattr(self, key)
            require(value is None or value > 0, f"trainer.{key}", f"must be > 0 or null, got {value}")
        require((self.cpu_micro_batch_size is None) == (self.cpu_global_batch_size is None), "trainer.cpu_global_batch_size",
                 "set trainer.cpu_micro_batch_size and trainer.cpu_global_batch_size together (or both null)")
        if self.cpu_micro_batch_size and self.cpu_global_batch_size:
            require(self.cpu_global_batch_size % (self.cpu_micro_batch_size * self.devices) == 0, "trainer.cpu_global_batch_size",
                     f"{self.cpu_global_batch_size} is not a multiple of trainer.cpu_micro_batch_size={self.cpu_micro_batch_size}"
                     + (f" x trainer.devices={self.devices}" if self.devices > 1 else ""))
        require(self.cpu_max_seq_len is None or self.cpu_max_seq_len >= 16, "trainer.cpu_max_seq_len",
                 f"must be >= 16 or null, got {self.cpu_max_seq_len}")
        require(self.cpu_val_size is None or self.cpu_val_size >= 0, "trainer.cpu_val_size",
                 f"must be >= 0 or null, got {self.cpu_val_size}")

    @property
    def accumulate_grad_batches(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.devices)

