"""Adapter builders: LoRA, DoRA, rsLoRA, VeRA through peft, or full fine-tuning.

``adapter.init`` picks peft's LoRA initialisation (``init_lora_weights``): ``default`` (A
Kaiming-uniform, B = 0), ``gaussian``, ``pissa``, ``olora``, ``loftq``, ``eva``, ``corda``. EVA and
CorDA are data-driven: they read ``adapter.init_examples`` examples of the run's own training
split (the first ones of the data seed's shuffle). PiSSA, OLoRA, CorDA and LoftQ change the
base weights (W_res = W - BA): the harness saves the initial adapter in ``<run dir>/adapter_init``
and saves the trained one converted by peft (``path_initial_model_for_weight_conversion``) into a
plain LoRA adapter of rank 2r on the unmodified base, so ``PeftModel.from_pretrained``, the export
and the scoring of a saved adapter see the trained model.
"""

from __future__ import annotations

import torch
from torch import nn

from .schema import AdapterConfig, ConfigError

MUTATES_BASE = ("pissa", "olora", "loftq", "corda")  # inits that rewrite the base weights
CONVERTED = ("pissa", "olora", "corda")  # of those, the ones peft converts back to a LoRA on the base
DATA_INITS = ("eva", "corda")  # inits that read training examples
INIT_DIR = "adapter_init"  # the initial adapter, for peft's conversion of a base-mutating init
EVA_BATCH = 8  # examples per EVA batch: enough response tokens for r components per batch


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


def init_kwargs(cfg: AdapterConfig) -> dict:
    """``init_lora_weights`` and the method's own peft config (EvaConfig, CordaConfig, LoftQConfig)
    from ``adapter.init`` and ``adapter.init_options``. EVA keeps every layer at rank r unless
    ``init_options.rho`` > 1 asks it to redistribute ranks (rho=1: same shapes as every other init)."""
    opts = dict(cfg.init_options)
    if cfg.init == "default":
        return {"init_lora_weights": True}
    if cfg.init == "pissa":
        niter = opts.get("niter")  # fast SVD with niter subspace iterations
        return {"init_lora_weights": "pissa" if niter is None else f"pissa_niter_{int(niter)}"}
    if cfg.init == "eva":
        from peft import EvaConfig

        return {"init_lora_weights": "eva", "eva_config": EvaConfig(**{"rho": 1.0, **opts})}
    if cfg.init == "corda":
        from peft.tuners.lora.config import CordaConfig

        return {"init_lora_weights": "corda", "corda_config": CordaConfig(**opts)}
    if cfg.init == "loftq":
        from peft import LoftQConfig

        return {"init_lora_weights": "loftq", "loftq_config": LoftQConfig(**opts)}
    return {"init_lora_weights": cfg.init}  # gaussian, olora


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
        **init_kwargs(cfg),
    )


def vera_config(cfg: AdapterConfig):
    """peft's VeraConfig: frozen random projections shared by every layer (r is their rank),
    trained scaling vectors; the projections are saved with the adapter."""
    from peft import VeraConfig

    return VeraConfig(task_type="CAUSAL_LM", r=cfg.r, vera_dropout=cfg.dropout, target_modules=cfg.target_modules,
                      save_projection=True, bias="none")


def counting_config(cfg: AdapterConfig) -> AdapterConfig:
    """The same adapter with peft's default init: the same shapes (EVA at rho 1), for counting
    parameters on the meta device and for rebuilding a model whose weights are then loaded."""
    import dataclasses

    return cfg if cfg.init == "default" else dataclasses.replace(cfg, init="default", init_options={})


def check_init_supported(cfg: AdapterConfig, device: str) -> None:
    """peft 0.21's LoftQ quantizes on CUDA only (``loftq_init`` moves every weight to ``cuda``)."""
    if cfg.init == "loftq" and device != "cuda":
        raise ConfigError("adapter.init: loftq needs a CUDA GPU (peft's LoftQ quantizes on CUDA); "
                          "none is in use here")


def init_examples(cfg: AdapterConfig, train: list[dict]) -> list[dict] | None:
    """The training examples a data-driven init reads (None for the others)."""
    if cfg.init not in DATA_INITS:
        return None
    if not train:
        raise ConfigError(f"adapter.init: {cfg.init} reads training examples, and the training split is empty")
    return train[: cfg.init_examples]


def _data_init(model: nn.Module, cfg: AdapterConfig, config, examples: list[dict], pad_id: int):
    """Apply a data-driven init: CorDA's covariance pass (one example per forward, as its hook
    expects) before wrapping, EVA's incremental SVD of the layer inputs after."""
    from peft import get_peft_model

    from .batches import collate, model_inputs

    device = next(model.parameters()).device

    def on_device(batch: dict) -> dict:
        inputs = {**model_inputs(batch), "labels": batch["labels"]}
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}

    if cfg.init == "corda":
        from peft.tuners.lora.corda import preprocess_corda

        def run_model() -> None:
            with torch.no_grad():
                for example in examples:
                    model(**{k: v for k, v in on_device(collate([example], pad_id)).items() if k != "labels"})

        preprocess_corda(model, config, run_model=run_model)
        return get_peft_model(model, config)
    from peft import initialize_lora_eva_weights

    peft_model = get_peft_model(model, config)
    batches = [on_device(collate(examples[i:i + EVA_BATCH], pad_id)) for i in range(0, len(examples), EVA_BATCH)]
    initialize_lora_eva_weights(peft_model, dataloader=batches, show_progress_bar=False)
    return peft_model


def save_adapter(model: nn.Module, target, cfg: AdapterConfig, run_dir) -> None:
    """Save a trained adapter in PEFT format. After a base-mutating init (PiSSA, OLoRA, CorDA)
    peft converts it into a LoRA adapter of rank 2r on the unmodified base (see the module doc)."""
    from pathlib import Path

    initial = Path(run_dir) / INIT_DIR
    if cfg.kind != "full" and cfg.init in CONVERTED and initial.is_dir():
        model.save_pretrained(target, path_initial_model_for_weight_conversion=str(initial))
    else:
        model.save_pretrained(target)


def apply_adapter(model: nn.Module, cfg: AdapterConfig, gradient_checkpointing: bool = False,
                  examples: list[dict] | None = None, pad_id: int = 0, init_dir=None) -> nn.Module:
    """Wrap ``model`` for training: a peft model with only adapter weights trainable, or the
    model itself with every weight trainable for ``full``.

    examples (with ``pad_id``): the training examples EVA and CorDA read (:func:`init_examples`).
    init_dir: where a base-mutating init saves its initial adapter, for :func:`save_adapter`.

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
    if cfg.kind == "vera":
        return get_peft_model(model, vera_config(cfg))
    config = lora_config(cfg)
    if cfg.init in DATA_INITS:
        if examples is None:
            raise ConfigError(f"adapter.init: {cfg.init} needs training examples to initialise from, and none were given")
        peft_model = _data_init(model, cfg, config, examples, pad_id)
    else:
        peft_model = get_peft_model(model, config)
    if init_dir is not None and cfg.init in CONVERTED:
        peft_model.save_pretrained(init_dir)  # the initial adapter, for peft's conversion at save
    return peft_model


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
