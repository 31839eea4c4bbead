"""Dry-run estimate: parameter counts and a peak-memory budget, with no weights loaded.

The model is built on the meta device (shapes only, no memory), the adapter is applied the
same way a real run applies it (so target names are validated and peft counts the
parameters), and memory is the sum of five parts (F12): weights + adapter weights +
gradients + optimizer state + activations of one micro-batch. Every simplification is
listed in the estimate's ``assumptions``.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from .adapters import apply_adapter, count_parameters, counting_config
from .models import compute_dtype, decoder_blocks, load_config, torch_dtype
from .schema import QuantConfig, RunConfig
from .speed import uses_fused_loss

GIB = 1024**3

# bitsandbytes 4-bit layout: one absmax per block of 64 values; double quant stores each
# absmax as one byte plus one fp32 per 256 absmax values.
QUANT_BLOCK = 64
NESTED_BLOCK = 256


def resolve_precision(precision: str, device: str, adapter_kind: str = "lora") -> str:
    """The Lightning precision a run uses.

    ``auto`` is bf16 where bf16 matmuls are native (a CUDA GPU with bf16, or a CPU with
    AVX512-BF16/AMX, where it runs about 2.4x faster than fp32), else 32-true. Adapters train
    with bf16 weights (bf16-true); full fine-tuning keeps fp32 master weights (bf16-mixed),
    because with bf16 weights most updates at full fine-tuning learning rates are below half a
    bf16 step and round to nothing (at lr 2e-5, 96% of the embedded model's matrix weights).
    An explicit precision is taken as given.
    """
    if precision != "auto":
        return precision
    if device in ("cuda", "gpu"):
        native = not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
    else:
        native = cpu_has_native_bf16()
    if not native:
        return "32-true"
    return "bf16-mixed" if adapter_kind == "full" else "bf16-true"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (Linux /proc/cpuinfo flags)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _nbytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype, device="meta").element_size()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def quantized_linear_bytes(out_features: int, in_features: int, quant: QuantConfig) -> int:
    """Bytes of one bitsandbytes-quantized weight matrix, quantization constants included."""
    n = out_features * in_features
    if quant.mode == "int8":
        return n + 4 * out_features  # int8 values + one fp32 scale per row
    blocks = math.ceil(n / QUANT_BLOCK)
    absmax = blocks + 4 * math.ceil(blocks / NESTED_BLOCK) if quant.double_quant else 4 * blocks
    return math.ceil(n / 2) + absmax


def weight_bytes(model: nn.Module, quant: QuantConfig) -> int:
    """Bytes of the base model's weights (before any adapter), quantized where bitsandbytes would.

    Every nn.Linear except the output head is quantized; the rest keeps the dtype the model
    was built in. Tied weights count once.
    """
    head = model.get_output_embeddings()
    quantized: set[int] = set()
    total = 0
    if quant.mode != "none":
        for module in model.modules():
            if isinstance(module, nn.Linear) and module is not head:
                total += quantized_linear_bytes(module.out_features, module.in_features, quant)
                quantized.add(id(module.weight))
    for param in model.parameters():  # parameters() yields a tied weight once
        if id(param) not in quantized:
            total += param.numel() * param.element_size()
    return total


def _layer_shapes(config) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each linear in a Llama-style decoder block, and lm_head."""
    hidden, inter = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    q_dim = heads * head_dim
    kv_dim = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    return {
        "q_proj": (hidden, q_dim), "k_proj": (hidden, kv_dim), "v_proj": (hidden, kv_dim),
        "o_proj": (q_dim, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
        "down_proj": (inter, hidden), "lm_head": (hidden, config.vocab_size),
    }


def _lora_saved_bytes(in_features: int, out_features: int, run: RunConfig, act: int) -> int:
    """Per token: what one LoRA/DoRA linear saves for backward beyond the frozen base layer."""
    adapter = run.adapter
    saved = adapter.r * act  # lora_A output, the input of lora_B
    if adapter.dropout > 0 and not _dropout_recomputed(run):
        saved += in_features * (act + 1)  # dropped-out input copy + its 1-byte mask
    if adapter.kind == "dora":
        # The base output and the LoRA output, each scaled by the magnitude vector, which trains
        # (a GPU peak missed by 14% with the first alone, docs/benchmarks.md, issue 18).
        saved += 2 * out_features * act
    return saved


def _dropout_recomputed(run: RunConfig) -> bool:
    return run.trainer.recompute_lora_dropout and run.adapter.kind == "lora"


def _fused_loss(run: RunConfig) -> bool:
    return run.trainer.liger_kernels and uses_fused_loss(run.adapter)


def activation_bytes(config, run: RunConfig, compiled_block: int | None = None) -> int:
    """Saved activations of one micro-batch at full length (the worst case), in bytes.

    ``compiled_block``: what one compiled decoder block keeps for the micro-batch, traced
    (:func:`harness.compiled_memory.saved_bytes`); it replaces the eager per-layer count below.

    Per decoder layer and token (elements, at the compute dtype): the two RMSNorm inputs
    (2 x hidden), SDPA's q, k, v (after RoPE) and output (hidden + 2 x kv_dim + hidden), the
    MLP's gate, up, SiLU and product (4 x intermediate); plus per LoRA-targeted linear its
    dropout copy and rank-r intermediate. A frozen 16-bit or 4-bit linear without LoRA saves
    no input (a bitsandbytes int8 one saves it, counted where the code says why); full
    fine-tuning, and LoRA whose inputs are not dropped out (dropout 0, or recomputed), also
    save the norm outputs that feed q/k/v and gate/up, once each however many adapters read
    them (the inputs of o_proj and down_proj are already counted). After the last layer: the
    final norm input and the logits (compute dtype plus an fp32 copy for the loss), or with
    liger's fused loss the input gradient it computes in forward instead of the logits. With
    gradient checkpointing only each layer's input is kept, plus one layer's activations while
    it is recomputed. DoRA with dropout on a quantized or ``*-mixed`` base also keeps a copy of
    each targeted weight (not per token).
    """
    precision = run.trainer.precision
    act = _nbytes(compute_dtype(precision))
    shapes = _layer_shapes(config)
    hidden, vocab = config.hidden_size, config.vocab_size
    _, q_dim = shapes["q_proj"]
    _, kv_dim = shapes["k_proj"]
    full = run.adapter.kind == "full"
    targets = set() if full else set(run.adapter.target_modules)

    layer = (2 * hidden + q_dim + 2 * kv_dim + q_dim + 4 * config.intermediate_size) * act
    norm_outputs = [{"q_proj", "k_proj", "v_proj"}, {"gate_proj", "up_proj"}]
    counted_norms = 0
    if full:
        layer += 2 * hidden * act
    elif run.adapter.dropout == 0 or _dropout_recomputed(run):
        counted_norms = sum(1 for readers in norm_outputs if readers & targets)
        layer += counted_norms * hidden * act
    if run.quant.mode == "int8" and not full:
        # bitsandbytes' int8 matmul (MatMul8bitLt) keeps its input for backward, where a frozen
        # 16-bit or 4-bit linear keeps none: both norm outputs (those not counted above), the
        # attention output as o_proj reads it (a contiguous copy) and down_proj's input. The last
        # is calibrated, not derived (the four intermediate-size tensors above already hold it):
        # with it the int8 peak's excess over nf4's is right within 0.1 GiB on the 7B shape it
        # came from and 0.04 GiB on the 135M one (docs/benchmarks.md, issue 18).
        layer += ((len(norm_outputs) - counted_norms) * hidden + q_dim + config.intermediate_size) * act
    layer += sum(_lora_saved_bytes(*shapes[t], run, act) for t in targets & (shapes.keys() - {"lm_head"}))

    head = hidden * act + (hidden * act if _fused_loss(run) else vocab * (act + 4))
    if full:
        head += hidden * act
    elif "lm_head" in targets:
        head += _lora_saved_bytes(*shapes["lm_head"], run, act)

    if precision.endswith("-mixed"):
        layer, head = _mixed_extra(layer, head, hidden, act, full)
    layers = config.num_hidden_layers
    tokens = run.trainer.micro_batch_size * run.data.max_seq_len
    if compiled_block is not None:
        return layers * compiled_block + tokens * head
    if run.trainer.gradient_checkpointing:
        body = layers * hidden * act + layer
    else:
        body = layers * layer
    return tokens * (body + head) + _dora_weight_copies_bytes(config, run, act)


def _mixed_extra(layer: int, head: int, hidden: int, act: int, full: bool) -> tuple[int, int]:
    """Per token, a layer's and the head's saved bytes under autocast (``*-mixed``): the fp32
    base makes the residual stream fp32, so the norm inputs are saved in fp32; in full
    fine-tuning the norms' fp32 outputs are saved too (their weights train), and each linear
    reading them (q, k, v; gate, up; lm_head) saves its own half-precision cast of its input."""
    layer += 2 * hidden * (4 - act)
    head += hidden * (4 - act)
    if full:  # the 2 norm outputs counted at the compute dtype, now fp32; the 5 + 1 casts besides
        layer += 2 * hidden * (4 - act) + 5 * hidden * act
        head += hidden * (4 - act) + hidden * act
    return layer, head


def autocast_copy_bytes(base: nn.Module, run: RunConfig, precision: str) -> int:
    """``*-mixed``: autocast runs each Linear on a half-precision copy of its weight, and the
    matmul keeps the copy for backward: 2 bytes per weight of every Linear of ``base`` (the model
    before adapters) not quantized. With gradient checkpointing the frozen layers' copies are
    made again in backward, one layer at a time, the output head's kept; weights that train
    (full fine-tuning) stay in autocast's cache until the forward ends. (Checked on CPU with
    saved-tensor hooks, 2026-12-04: the 135M model keeps these bytes, less layer 0's q, k and v
    copies in LoRA, whose input needs no gradient.)"""
    if not precision.endswith("-mixed"):
        return 0
    head = base.get_output_embeddings()
    quantized = run.quant.mode != "none"  # every Linear but the head: no copy
    body = 0 if quantized else sum(m.weight.numel() for m in base.modules() if isinstance(m, nn.Linear) and m is not head)
    if run.trainer.gradient_checkpointing and run.adapter.kind != "full":
        body //= len(decoder_blocks(base)) or 1
    return 2 * (body + (head.weight.numel() if isinstance(head, nn.Linear) else 0))


def _dora_weight_copies_bytes(config, run: RunConfig, act: int) -> int:
    """DoRA with dropout: peft's DoRA layer computes the base output again from its dropped-out
    input and ``weight.to(x.dtype)``, and autograd keeps the weight it used for backward. That is
    a copy (in x out per DoRA-targeted linear of each layer, one layer with gradient
    checkpointing) where the weight is quantized (dequantized, at the compute dtype) or fp32
    under ``*-mixed`` (autocast's bf16 cast, not cached for a frozen weight); the parameter itself
    otherwise."""
    adapter = run.adapter
    mixed = run.trainer.precision.endswith("-mixed")
    if adapter.kind != "dora" or adapter.dropout == 0 or (run.quant.mode == "none" and not mixed):
        return 0
    shapes = _layer_shapes(config)
    per_layer = sum(i * o for name, (i, o) in shapes.items() if name in adapter.target_modules and name != "lm_head")
    layers = 1 if run.trainer.gradient_checkpointing else config.num_hidden_layers
    head = shapes["lm_head"][0] * shapes["lm_head"][1] if mixed and "lm_head" in adapter.target_modules else 0
    return (per_layer * layers + head) * act


def loss_backward_bytes(config, run: RunConfig) -> int:
    """The peak's part that is no saved tensor: as backward starts, the loss's backward holds two
    fp32 gradients of the logits at once (nll_loss's and log_softmax's), while every activation
    is still saved; none with liger's fused loss (no logits). Measured (docs/benchmarks.md,
    issue 18): without it the estimate missed the peak by 0.2-0.3 GiB on the 7B shape (32k
    vocabulary, 1,454 tokens) and 0.78 GiB on the 135M one (49k vocabulary, 2,048 tokens)."""
    if _fused_loss(run):
        return 0
    return run.trainer.micro_batch_size * run.data.max_seq_len * config.vocab_size * 8


def _assumptions(run: RunConfig, precision: str, frozen, trainable, act, untracked) -> list[str]:
    quant = run.quant
    notes = [
        f"precision {precision}: frozen weights {_dtype_name(frozen)}, trainable weights, "
        f"gradients and optimizer states {_dtype_name(trainable)}, activations {_dtype_name(act)}",
    ]
    if quant.mode == "int8":
        notes.append("int8: 1 byte/param + fp32 scale per row for every Linear except lm_head; each int8 "
                     "Linear keeps its input for backward (bitsandbytes MatMul8bitLt)")
    elif quant.mode != "none":
        absmax = "1-byte absmax per 64 values + fp32 per 256 blocks (double quant)" if quant.double_quant \
            else "fp32 absmax per 64 values"
        notes.append(f"{quant.mode}: 0.5 byte/param + {absmax} for every Linear except lm_head; "
                     f"embeddings, norms, lm_head stay {_dtype_name(frozen)}")
    name = run.optimizer.name
    if run.optimizer.state_bytes == 1:
        notes.append(f"{name}: 1 byte per state, block statistics and small-tensor fp32 states ignored")
    if "Paged" in run.optimizer.target:
        notes.append(f"{name}: paged states counted as resident on the GPU")
    notes.append(
        f"activations: Llama-style block, {run.model.attn_implementation} attention without a "
        f"stored s x s score matrix, every sequence {run.data.max_seq_len} tokens, micro-batch "
        f"{run.trainer.micro_batch_size}; saved tensors only (elementwise temporaries, fp32 "
        "norm upcasts and backward scratch not counted, but for the loss's backward: two fp32 "
        "gradients of the logits)"
    )
    if untracked:
        notes.append(f"activations of adapters on {', '.join(sorted(untracked))} not counted (not a Llama linear)")
    if run.trainer.gradient_checkpointing:
        notes.append("gradient checkpointing: one hidden-size tensor per layer + one layer recomputed")
    if _fused_loss(run):
        notes.append("liger fused linear cross-entropy: no logits; its input gradient is kept from forward")
    else:
        notes.append("logits: micro-batch x seq x vocab in the compute dtype + an fp32 copy for the loss")
    if _dropout_recomputed(run) and run.adapter.dropout > 0:
        notes.append("recompute_lora_dropout: no dropped-out copies or masks; adapters share their saved input")
    if run.trainer.strategy == "fsdp" and run.trainer.devices > 1:
        notes.append(f"fsdp: per device; weights, gradients and optimizer states split {run.trainer.devices} ways, "
                     "plus two whole decoder blocks gathered at a time (and one block's gradients for full fine-tuning)")
    notes.append("not counted: CUDA context, allocator fragmentation; compare with max_memory_allocated")
    return notes


def _compiled_block_bytes(model: nn.Module, run: RunConfig, device: str) -> int | None:
    """A compiled block's saved bytes for one micro-batch, traced on ``model`` (the meta model,
    converted here to the run's dtype and speed switches, as training converts it); None where
    blocks are not compiled or not traced. A 4-bit base is traced as its 16-bit shape: neither
    frozen linear keeps its input (checked against one GPU peak, docs/benchmarks.md)."""
    from . import compiled_memory, speed

    if compiled_memory.not_traced_reason(run) is not None:
        return None
    key = _trace_key(run, device)
    if key not in _TRACED:  # a sweep estimates each run: runs differing only in lr, alpha or seed trace once
        if run.trainer.precision.endswith("-true"):
            model.to(torch_dtype(run.trainer.precision))
        if _dropout_recomputed(run):
            speed.recompute_lora_dropout(model)
        model.train()
        _TRACED[key] = compiled_memory.saved_bytes(model, run, device)
    return _TRACED[key]


# Traced compiled blocks' saved bytes by what they depend on (_trace_key): a trace takes seconds.
_TRACED: dict[str, int | None] = {}


def _trace_key(run: RunConfig, device: str) -> str:
    """What a compiled block's saved tensors depend on: the model, quantization, the adapter's
    shape (not its alpha, scaling or init), precision, micro-batch, length and speed switches."""
    import dataclasses
    import json

    adapter = {k: v for k, v in dataclasses.asdict(run.adapter).items()
               if k not in ("alpha", "alpha_over_r", "rslora", "init", "init_examples")}
    t = run.trainer
    return json.dumps([dataclasses.asdict(run.model), run.quant.mode, adapter, t.precision, t.micro_batch_size,
                       t.recompute_lora_dropout, run.data.max_seq_len, device], sort_keys=True, default=str)


def _compile_notes(run: RunConfig, compiled_block: int | None) -> list[str]:
    from .compiled_memory import not_traced_reason

    if not run.trainer.compile:
        return []
    if compiled_block is not None:
        tokens = run.trainer.micro_batch_size * run.data.max_seq_len
        return [f"compiled blocks: saved tensors traced through inductor's partitioner on the meta device, "
                f"{compiled_block / tokens:,.0f} bytes per token and layer (attention as sdpa runs it with a padding mask)"]
    reason = not_traced_reason(run) or "the trace failed"
    return [f"compiled blocks counted as eager ({reason}): an over-estimate (inductor recomputes what eager saves)"]


def _init_notes(adapter) -> list[str]:
    """What the parameter count does not know about the adapter's init."""
    if adapter.init == "eva" and float(adapter.init_options.get("rho", 1.0)) != 1.0:
        return [f"adapter.init=eva with rho {adapter.init_options['rho']}: EVA moves rank between layers from the data "
                "(at most r x rho each, the total rank kept); counted at rank r everywhere"]
    return []


def estimate_run(run: RunConfig, device: str | None = None) -> dict:
    """Parameter counts and a memory estimate for ``run``, with no weights loaded.

    device: where the run would train (``cuda`` or ``cpu``); it decides what precision
    ``auto`` means. Defaults to this machine's (``cuda`` when a GPU is present).
    Returns a JSON-able dict; byte counts are ints.
    """
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(run.trainer.precision, device, run.adapter.kind)
    run = replace(run, trainer=replace(run.trainer, precision=precision))
    frozen_dtype = torch_dtype(precision)  # what build_model loads the base weights as
    # peft upcasts adapter weights to fp32; bf16-true converts the whole module to bf16.
    trainable_dtype = torch_dtype(precision)
    act_dtype = compute_dtype(precision)

    config = load_config(run.model)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=frozen_dtype, trust_remote_code=run.model.trust_remote_code)
        weights = weight_bytes(model, run.quant)
        autocast_copies = autocast_copy_bytes(model, run, precision)  # before peft wraps the model in place
        # Every init has the default's shapes (EVA at rho 1); the data-driven ones need no data here.
        model = apply_adapter(model, counting_config(run.adapter), run.trainer.gradient_checkpointing)
    trainable, total = count_parameters(model)

    param_bytes = _nbytes(trainable_dtype)
    full = run.adapter.kind == "full"
    adapter = 0 if full else trainable * param_bytes  # full FT: the trained weights are the weights
    gradients = trainable * param_bytes
    states, state_bytes = run.optimizer.states, run.optimizer.state_bytes
    if run.optimizer.target == "torch.optim.SGD" and run.optimizer.momentum == 0:
        states = 0  # no momentum buffer
    optimizer = trainable * states * (state_bytes or param_bytes)
    loss_backward = loss_backward_bytes(config, run)
    # The adapters' own half-precision copies (not shared in a pack, unlike the base's), cached
    # by autocast (they train) until the forward ends, gradient checkpointing or not.
    adapter_copies = 0 if full or not precision.endswith("-mixed") else 2 * trainable
    untracked = set() if full else set(run.adapter.target_modules) - _layer_shapes(config).keys()

    # FSDP: each device holds 1/N of the weights, gradients and states, plus the whole blocks
    # being gathered (the one running and the one prefetched; in backward also its gradients).
    shards = run.trainer.devices if run.trainer.strategy == "fsdp" else 1
    gathered_blocks = 0
    if shards > 1:
        weights, adapter, gradients, optimizer = (-(-part // shards) for part in (weights, adapter, gradients, optimizer))
        blocks = decoder_blocks(model)
        block = sum(p.numel() * _nbytes(p.dtype) for p in blocks[0].parameters()) if blocks else 0
        gathered_blocks = block * (3 if full else 2)

    compiled_block = _compiled_block_bytes(model, run, device)  # last: it converts the meta model as training does
    activations = activation_bytes(config, run, compiled_block)
    total_bytes = (weights + adapter + gradients + optimizer + activations + loss_backward + autocast_copies
                   + adapter_copies + gathered_blocks)
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 4) if total else 0.0,
        "precision": precision,
        "memory_estimate": {
            "weights_bytes": weights,
            "adapter_bytes": adapter,
            "gradients_bytes": gradients,
            "optimizer_state_bytes": optimizer,
            "activations_bytes": activations,
            "loss_backward_bytes": loss_backward,
            "autocast_copies_bytes": autocast_copies,
            "adapter_autocast_copies_bytes": adapter_copies,
            "gathered_blocks_bytes": gathered_blocks,
            "total_bytes": total_bytes,
            "total_gib": round(total_bytes / GIB, 3),
            "total_gb": round(total_bytes / 1e9, 3),
            "assumptions": _assumptions(run, precision, frozen_dtype, trainable_dtype, act_dtype, untracked)
            + _compile_notes(run, compiled_block) + _init_notes(run.adapter),
        },
    }
