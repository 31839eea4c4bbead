"""Speed switches of the training path (``trainer.liger_kernels``, ``trainer.recompute_lora_dropout``;
``trainer.compile`` lives in the module). Each keeps the loss the same function of the weights
and the batch; ``tests/test_speed.py`` checks that against the plain path."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .schema import AdapterConfig, ConfigError

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

