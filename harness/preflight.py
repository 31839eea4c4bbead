"""Checks before a run: what the config alone cannot say (the machine, the data file, the model's
architecture), each a user error found before any weights load and before the training stack
(Lightning, transformers, peft) is imported. Torch is imported only by the checks that need it.
:func:`preflight` is what ``python -m harness.run`` calls."""

from __future__ import annotations

import importlib.util
import logging
import zipfile
from pathlib import Path

from .data import load_examples
from .evaluate import check_tasks
from .models import check_model_folder, hub_reachable, load_config
from .paths import MissingPathError, is_pypi_path
from .schema import ConfigError, RunConfig

# Attention implementations a run can use only on a CUDA GPU, and why.
GPU_ONLY_ATTENTION = {"flash_attention_2": "needs a CUDA GPU",
                      "flex_attention": "training needs a CUDA GPU (flex attention has no backward on CPU)"}


def preflight(run: RunConfig) -> None:
    """Checks that need the machine, the data file or the architecture, not just the config: each
    is a user error found before any weights load, and before the training stack (Lightning,
    transformers, peft) is imported, so it costs a second, not ten (flash- or flex-attention
    without a GPU, flash-attention without its package, a resume file that is no checkpoint, a
    device the run cannot have, a data file that is missing or malformed, an adapter rank larger
    than a layer it adapts)."""
    check_model_folder(run.model)  # a damaged model folder is named before any data or weights load
    check_device(run)
    attention = run.model.attn_implementation
    if attention in GPU_ONLY_ATTENTION:
        import torch

        if run.trainer.accelerator == "cpu" or not torch.cuda.is_available():
            raise ConfigError(f"model.attn_implementation={attention}: {GPU_ONLY_ATTENTION[attention]}; "
                              "use sdpa on this machine")
    if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError("model.attn_implementation=flash_attention_2: the flash-attn package is not installed "
                          "(pip install flash-attn), or use sdpa")
    resume = run.trainer.resume
    if resume not in (None, "auto"):
        path = Path(resume).expanduser()
        if not path.is_file():
            raise MissingPathError(f"trainer.resume={resume}: no such checkpoint file")
        if not zipfile.is_zipfile(path):  # torch.save's format: a zip archive
            raise ConfigError(f"trainer.resume={resume}: not a checkpoint (not a PyTorch checkpoint file)")
    if not run.dry_run:  # a dry run plans a run elsewhere: its data file need not be on this machine
        check_data(run)
    check_adapter_fits(run)


def check_device(run: RunConfig) -> None:
    """The checks of :func:`harness.train.prepare` that need only the device (a GPU asked for and
    missing, LoftQ or liger-kernel without one), made early; torch is imported only for them."""
    t = run.trainer
    if not (t.accelerator in ("gpu", "cuda") or t.liger_kernels or run.adapter.init == "loftq"):
        return
    import torch

    cuda = t.accelerator != "cpu" and torch.cuda.is_available()
    if t.accelerator in ("gpu", "cuda") and not cuda:
        raise ConfigError(f"trainer.accelerator={t.accelerator}: no CUDA GPU is available on this machine")
    from .adapters import check_init_supported

    check_init_supported(run.adapter, "cuda" if cuda else "cpu")
    if t.liger_kernels and not cuda:
        from .speed import check_liger_kernels

        check_liger_kernels("cpu", None)


def check_data(run: RunConfig) -> None:
    """Read the data file once before the training stack is imported, so a missing, empty or
    malformed file, or a hub dataset with no network, is one line at once; the run reads it again
    (milliseconds for a small file; a large one comes back from the parse cache this read fills).
    Left to the run: the embedded data (the harness's own file, read from its cache in a third of
    a second that every sweep trial would pay twice) and a reachable hub dataset (downloading it
    twice would cost, not save). Then the eval tasks, as the run checks them."""
    local = run.data.hf_name is None
    if (local and not is_pypi_path(run.data.path)) or (not local and not hub_reachable()):
        quiet = logging.getLogger("harness.data")
        level = quiet.level
        quiet.setLevel(logging.WARNING)  # the run logs what it loaded, once
        try:
            load_examples(run.data)
        finally:
            quiet.setLevel(level)
    if run.eval.tasks:
        check_tasks(run.eval.tasks)


def check_adapter_fits(run: RunConfig) -> None:
    """A LoRA rank larger than the smaller side of a layer it adapts adds parameters and no
    expressiveness (the update's rank is capped by that side): refused, naming the layer."""
    if run.adapter.kind == "full":
        return
    from .estimate import _layer_shapes  # imports torch

    try:
        shapes = _layer_shapes(load_config(run.model))
    except (AttributeError, TypeError):  # not a Llama-style architecture: nothing to check against
        return
    for target in run.adapter.target_modules:
        if target in shapes and run.adapter.r > min(shapes[target]):
            inputs, outputs = shapes[target]
            raise ConfigError(f"adapter.r={run.adapter.r}: larger than {target} ({inputs} -> {outputs}) of this "
                              f"architecture; the rank can be at most {min(shapes[target])}")
