"""Speed switches of the training path: ``trainer.compile`` (regional compilation, and with
``trainer.compile_mode`` CUDA graphs, which the training loop must humour: :class:`CudaGraphGuard`),
``trainer.liger_kernels`` and ``trainer.recompute_lora_dropout``. Each keeps the loss the same
function of the weights and the batch; ``tests/test_speed.py`` checks that against the plain path."""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .models import decoder_blocks
from .schema import AdapterConfig, ConfigError, TrainerConfig
from .trainer_schema import uses_cuda_graphs

log = logging.getLogger(__name__)


def check_liger_kernels(device: str, model_type: str | None) -> None:
    """ConfigError unless liger-kernel can patch this model here: a CUDA GPU, the package, and
    kernels for the architecture. Cheap: called before any weights load."""
    if device != "cuda":
        raise ConfigError("trainer.liger_kernels=true: liger-kernel's Triton kernels need a CUDA GPU")
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError as exc:
        raise ConfigError('trainer.liger_kernels=true: liger-kernel is not installed (pip install -e ".[speed]")') from exc
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        raise ConfigError(f"trainer.liger_kernels=true: liger-kernel has no kernels for model type {model_type!r}")


def apply_liger_kernels(model: nn.Module, adapter: AdapterConfig, device: str) -> None:
    """Swap in liger-kernel's Triton RMSNorm, SwiGLU, RoPE and fused linear cross-entropy, on
    this model instance, before the adapter wraps it.

    The fused loss computes the head's matmul itself from ``lm_head.weight``, which would skip a
    LoRA on lm_head: with lm_head among the targets it is left out (the logits are then built as
    usual). liger swaps RoPE in the architecture's transformers module, so it holds for the whole
    process (one run per process, as the CLI and sweeps run them).
    """
    check_liger_kernels(device, getattr(model.config, "model_type", None))
    from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance

    fused_loss = uses_fused_loss(adapter)
    if not fused_loss:
        log.info("liger kernels: fused linear cross-entropy left out, LoRA adapts lm_head")
    _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True,
                                    fused_linear_cross_entropy=fused_loss)


def uses_fused_loss(adapter: AdapterConfig) -> bool:
    """Whether liger's fused linear cross-entropy applies (not when LoRA adapts lm_head)."""
    return adapter.kind == "full" or "lm_head" not in adapter.target_modules


class RecomputedDropoutLinear(nn.Linear):
    """A LoRA ``lora_A`` with its input dropout folded in.

    peft saves each adapter's dropped-out input for backward: q, k and v read one hidden state
    but keep three dropped copies and three masks. Here the dropout and the rank-r matmul run
    under ``torch.utils.checkpoint``, which saves only the input (one tensor, shared by every
    adapter reading it) and the RNG state, and in backward redraws the same mask. Same
    parameters and state-dict keys as the ``nn.Linear`` it replaces.
    """

    def __init__(self, linear: nn.Linear, p: float):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight = linear.weight
        self.bias = linear.bias
        self.p = p

    def _dropped_linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.dropout(x, self.p, training=True), self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        if not torch.is_grad_enabled():
            return self._dropped_linear(x)
        return checkpoint(self._dropped_linear, x, use_reentrant=False, preserve_rng_state=True)


def recompute_lora_dropout(model: nn.Module) -> int:
    """Fold every plain LoRA adapter's dropout into a :class:`RecomputedDropoutLinear`.

    DoRA adapters (whose dropped input also feeds the base layer) and adapters without
    dropout stay as they are. Returns how many adapters were changed.
    """
    from peft.tuners.lora import LoraLayer

    changed = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        variants = getattr(module, "lora_variant", {})
        for name, dropout in list(module.lora_dropout.items()):
            lora_a = module.lora_A[name] if name in module.lora_A else None
            if (not isinstance(dropout, nn.Dropout) or dropout.p == 0 or name in variants
                    or type(lora_a) is not nn.Linear):
                continue
            module.lora_A[name] = RecomputedDropoutLinear(lora_a, dropout.p)
            module.lora_dropout[name] = nn.Identity()
            changed += 1
    return changed



# -- trainer.compile -------------------------------------------------------------------------------

def batch_widths(trainer: TrainerConfig, max_seq_len: int) -> tuple[int, ...]:
    """The widths batches are padded to: under CUDA graphs (one graph recorded per shape)
    ``trainer.graph_widths`` evenly spaced widths up to ``max_seq_len``, each a multiple of 8, a
    batch taking the smallest that holds it; none otherwise (each batch its own width)."""
    if not uses_cuda_graphs(trainer):
        return ()
    count = trainer.graph_widths
    return tuple(sorted({int(math.ceil(max_seq_len * k / count / 8) * 8) for k in range(1, count + 1)}))


def compile_blocks(model: nn.Module, mode: str = "default") -> int:
    """Regional compilation: torch.compile each repeated decoder block in place (``Module.compile``).

    The blocks share one compiled graph, so a 30-layer model compiles about as fast as one layer
    (compiling the whole forward took minutes on a 7B model); parameter names, saving, export
    and lm-eval see the plain model. Models without ``_no_split_modules`` compile whole.
    The first block shares it too: in training its input (a frozen embedding's output) is made
    to require grad, as every later block's input does, which would otherwise guard a graph of
    its own (a second compile, and under CUDA graphs a second recording).
    ``mode``: torch.compile's mode. Returns how many modules were compiled.
    """
    blocks = decoder_blocks(model)
    embeddings = _input_embeddings(model) if blocks else None
    if embeddings is not None and not getattr(embeddings, "_harness_requires_grad_hook", False):
        embeddings.register_forward_hook(_require_grad_in_training)
        embeddings._harness_requires_grad_hook = True
    for block in blocks or [model]:
        block.compile(mode=None if mode == "default" else mode)
    return len(blocks) or 1


def _input_embeddings(model: nn.Module) -> nn.Module | None:
    try:
        return model.get_input_embeddings()
    except (AttributeError, NotImplementedError):  # a model without the usual layout compiles as before
        return None


def _require_grad_in_training(module, inputs, output):
    if torch.is_grad_enabled() and not output.requires_grad:
        output.requires_grad_(True)
        # A leaf now: backward would keep its gradient (nothing reads it) until the graph is freed.
        output.register_post_accumulate_grad_hook(_drop_grad)


def _drop_grad(tensor: torch.Tensor) -> None:
    tensor.grad = None


# torch's own compile timers (``torch._dynamo.utils.compile_times``) and cache counters, by the
# names a record gives them: the forward's compile (dynamo, AOTAutograd, inductor), the
# backward's (compiled at the first backward), and the hits and misses of inductor's FX graph
# cache and AOTAutograd's cache (a pack that finds its graphs cached compiles in a fraction).
_COMPILE_TIMERS = {"forward_s": "_compile.compile_inner", "backward_s": "compile_fx.<locals>.bw_compiler"}
_COMPILE_COUNTERS = {"fxgraph_cache_hits": ("inductor", "fxgraph_cache_hit"),
                     "fxgraph_cache_misses": ("inductor", "fxgraph_cache_miss"),
                     "autograd_cache_hits": ("aot_autograd", "autograd_cache_hit"),
                     "autograd_cache_misses": ("aot_autograd", "autograd_cache_miss")}


def compile_work() -> dict[str, float | int]:
    """This process's compile work so far: seconds by :data:`_COMPILE_TIMERS`, counts by
    :data:`_COMPILE_COUNTERS`. Pass it to :func:`compile_work_since` for a phase's share."""
    from torch._dynamo.utils import compile_times, counters

    names, values = compile_times(repr="csv", aggregate=True)
    seconds = dict(zip(names, (float(v) for v in values), strict=True))
    work = {key: seconds.get(name, 0.0) for key, name in _COMPILE_TIMERS.items()}
    work.update({key: counters[group][name] for key, (group, name) in _COMPILE_COUNTERS.items()})
    return work


def compile_work_since(before: dict[str, float | int]) -> dict[str, float | int]:
    """The compile work done since ``before`` (:func:`compile_work`), seconds rounded to 0.01 s,
    counts as counts."""
    now = compile_work()
    return {key: round(now[key] - before.get(key, 0.0), 2) for key in now}


def eager_blocks(model: nn.Module, eager: bool) -> None:
    """Run compiled blocks eagerly (``eager=True``) or compiled again (``False``).

    For forward-only passes (validation, lm-eval) under CUDA graphs: in inference, cudagraph
    trees take a second call of the same graph as a new step and reuse its output buffers, and
    every block shares one graph, so each block would overwrite the output the next one reads.
    """
    for module in model.modules():
        # Module.compile stores the compiled forward in _compiled_call_impl; None means eager.
        if eager and getattr(module, "_compiled_call_impl", None) is not None:
            module._harness_compiled_call = module._compiled_call_impl
            module._compiled_call_impl = None
        elif not eager and "_harness_compiled_call" in module.__dict__:
            module._compiled_call_impl = module.__dict__.pop("_harness_compiled_call")


def release_compiled(model: nn.Module) -> None:
    """After training: the blocks run eagerly for good, and torch's compiled code and CUDA graphs
    are dropped (``torch._dynamo.reset``), the graphs' private memory pools going back to the
    device. Validation and scoring run the blocks eagerly anyway (:func:`eager_blocks`), and on a
    shared GPU the pools are memory the scoring passes, and the other processes' packs, can use:
    a compiled pack of five held 9.2 GiB in them while it scored (`rag2`, 2026-12-07), and one of
    its neighbours ran out of memory; released (and scoring's batches handing theirs back), packs
    scored in 7.7-10.1 GiB reserved (`rag3`). The process compiles nothing after this; one that
    did would compile again (from inductor's cache on disk). Without CUDA there are no pools:
    the blocks only turn eager, and torch's caches stay (a CPU test process compiles on)."""
    for module in model.modules():
        module.__dict__.pop("_harness_compiled_call", None)
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
    if torch.cuda.is_initialized():
        torch._dynamo.reset()  # it also shuts down the cudagraph trees that own the pools
        torch.cuda.empty_cache()


def own_gradients(model: nn.Module) -> int:
    """Replace every parameter's ``.grad`` with a copy in memory of its own (one batched copy);
    returns how many were copied."""
    return own_param_gradients(model.parameters())


def own_param_gradients(params) -> int:
    """:func:`own_gradients` for these parameters only (a pack: the trials still accumulating)."""
    params = [p for p in params if p.grad is not None]
    copies = [torch.empty_like(p.grad) for p in params]
    if params:
        torch._foreach_copy_(copies, [p.grad for p in params])
    for param, copy in zip(params, copies, strict=True):
        param.grad = copy
    return len(params)


def cuda_graph_guard():
    """A Lightning callback with what the training loop owes blocks that replay CUDA graphs
    (:func:`uses_cuda_graphs`): validation runs them eagerly (see :func:`eager_blocks`), and with
    gradient accumulation the first micro-batch's gradients are copied out of the graph's buffers.

    Built on call: the dry-run estimate imports this module, and stays clear of Lightning's imports.
    """
    import lightning as L

    class CudaGraphGuard(L.Callback):
        def __init__(self):
            self.first_backward = True  # of the optimizer step under way

        def on_train_start(self, trainer, pl_module):
            self.first_backward = True

        def on_after_backward(self, trainer, pl_module):
            # Under CUDA graphs autograd adopts the first micro-batch's gradients as .grad, and they
            # are the graph's own output buffers: the next micro-batch's replay overwrites them
            # before they are added to (an error, or silently wrong sums; pytorch/pytorch#169545).
            if self.first_backward and trainer.accumulate_grad_batches > 1:
                own_gradients(pl_module.model)
            self.first_backward = False

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.first_backward = True

        def on_validation_start(self, trainer, pl_module):
            eager_blocks(pl_module.model, True)

        def on_validation_end(self, trainer, pl_module):
            eager_blocks(pl_module.model, False)

    return CudaGraphGuard()
