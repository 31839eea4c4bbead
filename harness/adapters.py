"""Adapter builders: LoRA, DoRA, rsLoRA through peft, or full fine-tuning."""

from __future__ import annotations

import torch
from torch import nn

from .schema import AdapterConfig, ConfigError


def linear_module_names(model: nn.Module) -> set[str]:
    """Short names (last path component) of every linear-like module in the model."""
    names = set()
    for full_name, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(full_name.rsplit(".", 1)[-1])
    return names


def check_targets(cfg: AdapterConfig, model: nn.Module) -> None:
    """Fail with the missing names when the architecture lacks a target module."""
    if cfg.kind == "full":
        return
    available = linear_module_names(model)
    missing = [t for t in cfg.target_modules if t not in available]
    if missing:
        raise ConfigError(
            f"adapter.targets: {', '.join(missing)} not in this architecture; "
            f"its linear modules are {', '.join(sorted(available))}"
        )


def lora_config(cfg: AdapterConfig):
    """peft's LoraConfig for a LoRA/DoRA adapter config."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        use_rslora=cfg.rslora,
        use_dora=cfg.kind == "dora",
        target_modules=cfg.target_modules,
        bias="none",
    )


def apply_adapter(model: nn.Module, cfg: AdapterConfig, gradient_checkpointing: bool = False) -> nn.Module:
    """Wrap ``model`` for training: a peft model with only adapter weights trainable, or the
    model itself with every weight trainable for ``full``.

    Unlike ``peft.prepare_model_for_kbit_training`` this does not upcast the frozen weights
    to fp32: on a 7B model that upcast eats most of QLoRA's memory saving.
    """
    check_targets(cfg, model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.kind == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    from peft import get_peft_model

    for param in model.parameters():
        param.requires_grad_(False)
    if gradient_checkpointing:
        # Frozen embeddings produce no grad; checkpointed blocks need an input that requires one.
        model.enable_input_require_grads()
    return get_peft_model(model, lora_config(cfg))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights count as their unpacked size."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if type(param).__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def trainable_state_dtype(model: nn.Module) -> torch.dtype | None:
    """Dtype of the trainable weights (None when nothing trains)."""
    for param in model.parameters():
        if param.requires_grad:
            return param.dtype
    return None
