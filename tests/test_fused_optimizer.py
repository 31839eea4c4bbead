"""Fused AdamW only where Lightning can clip its gradients."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from harness.module import fused_optimizer_allowed


def trainer(precision: str, clip: float) -> Trainer:
    return Trainer(accelerator="cpu", precision=precision, gradient_clip_val=clip, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def test_fused_adamw_is_left_out_where_mixed_precision_would_refuse_to_clip_it():
    mixed = trainer("bf16-mixed", 1.0)
    # The failure this avoids (full fine-tuning, bf16-mixed, on an H200): Lightning's
    # mixed-precision plugin refuses to clip a fused optimizer's gradients.
    param = torch.nn.Parameter(torch.ones(4))
    param.grad = torch.ones(4)
    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        mixed.precision_plugin.clip_gradients(torch.optim.AdamW([param], fused=True), clip_val=1.0)
    mixed.precision_plugin.clip_gradients(torch.optim.AdamW([param], foreach=True), clip_val=1.0)
    assert not fused_optimizer_allowed(mixed)
    assert fused_optimizer_allowed(trainer("bf16-mixed", 0.0))  # no clipping: nothing to refuse
    assert fused_optimizer_allowed(trainer("bf16-true", 1.0))  # LoRA's precision keeps the fused kernel
    assert fused_optimizer_allowed(trainer("32-true", 1.0))
