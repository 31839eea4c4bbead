"""Model and tokenizer builders: embedded GGUF, HF hub ids, local folders, random init, quantization."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelLoadError
from .paths import cache_dir, is_pypi_path, resolve_pypi_path
from .schema import ConfigError, ModelConfig, QuantConfig

if TYPE_CHECKING:
    import torch
# torch is imported where it is used: the entry point reads this module (its checks and errors)
# before a run starts, and a bad value must end in one line without paying for torch.

log = logging.getLogger(__name__)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def embedded_folder(spec: str) -> Path:
    """Dequantize a ``pypi:PACKAGE/FILE.gguf`` once into a cached HF folder (safetensors + tokenizer).

    The first call takes ~15 s; later calls return the cached folder at once. The folder is
    written to a temporary name and renamed, so an interrupted conversion leaves no half folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = resolve_pypi_path(spec)
    target = cache_dir() / "models" / f"{gguf.stem}-{gguf.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    log.info("Converting %s to safetensors once (cached in %s)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        kwargs = dict(gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True), dtype=torch.float32, **kwargs
        )
        # The weights are plain tensors now; drop the GGUF marker that blocks save_pretrained.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = spec
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        with contextlib.suppress(FileExistsError, OSError):
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def local_source(spec: str, key: str = "model.name_or_path") -> str:
    """Turn a model/tokenizer spec into what ``from_pretrained`` takes (a folder or a hub id);
    errors name the config ``key`` the spec came from."""
    if is_pypi_path(spec):
        path = resolve_pypi_path(spec)
        return str(path if path.is_dir() else embedded_folder(spec))  # a folder is an HF folder already
    if looks_local(spec):
        path = Path(os.path.expanduser(spec))
        if not (path / "config.json").is_file() and not (path / "tokenizer_config.json").is_file():
            raise ModelLoadError(f"{key}={spec}: not an HF model folder (no config.json or tokenizer_config.json)")
        return str(path)
    if not hub_reachable():
        raise ModelLoadError(
            f"{key}={spec}: the HF hub is not reachable (no network or HF_HUB_OFFLINE=1); use a local folder, "
            "model=smollm2_135m (embedded), or model.init=random for a preset with an offline architecture"
        )
    return spec


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "special_tokens_map.json")


def check_model_folder(cfg: ModelConfig) -> None:
    """What is wrong with a local model folder, in one :class:`ModelLoadError` line, before any
    data or weights load: not a folder, a corrupt ``config.json``, only tokenizer files, no
    weights, a weight file or shard that is truncated or missing. Hub ids, embedded models and
    folders that look whole pass; ``model.init=random`` needs no weights."""
    spec = cfg.name_or_path
    if spec is None or is_pypi_path(spec) or not looks_local(spec) or spec.endswith(".gguf"):
        return
    folder = Path(os.path.expanduser(spec))
    where = f"model.name_or_path={spec}"
    if not folder.exists():
        raise ModelLoadError(f"{where}: no such folder")
    if not folder.is_dir():
        raise ModelLoadError(f"{where}: is a file, not an HF model folder (a folder with config.json and weights)")
    config = folder / "config.json"
    if not config.is_file():
        if any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise ModelLoadError(f"{where}: holds only tokenizer files (no config.json, no weights): a tokenizer "
                                 "folder, not a model; point model.name_or_path at the model (model.tokenizer may name this folder)")
        raise ModelLoadError(f"{where}: not an HF model folder (no config.json)")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelLoadError(f"{where}: config.json is not valid JSON ({_one_line(exc)}); the folder is damaged, "
                             "copy or download it again") from None
    if not isinstance(parsed, dict) or "model_type" not in parsed:
        raise ModelLoadError(f"{where}: config.json has no model_type (not a transformers config); the folder is "
                             "damaged, copy or download it again")
    if cfg.init == "random":
        return
    weights = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        found = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".gguf"))
        extra = f" (found {', '.join(found[:4])})" if found else ""
        raise ModelLoadError(f"{where}: has config.json but no weights ({' or '.join(WEIGHT_FILES[::2])}){extra}; "
                             "copy the weights into the folder, or use model.init=random")
    shards = [folder / weights[0]]
    if weights[0].endswith(".index.json"):
        try:
            names = sorted(set(json.loads(shards[0].read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelLoadError(f"{where}: {weights[0]} is not a valid shard index ({_one_line(exc)})") from None
        shards = [folder / name for name in names]
        missing = [p.name for p in shards if not p.is_file()]
        if missing:
            raise ModelLoadError(f"{where}: {len(missing)} weight shard(s) named in {weights[0]} are missing "
                                 f"({', '.join(missing[:3])}); copy them into the folder")
    for shard in shards:
        if shard.suffix == ".safetensors":
            problem = safetensors_problem(shard)
            if problem:
                raise ModelLoadError(f"{where}: {shard.name} {problem}; copy or download it again")


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is unreadable (its header says how long it must be), or None."""
    import struct

    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"is truncated ({size} bytes, not even a header)"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return f"is truncated ({size:,} bytes; its header alone needs {length + 8:,})"
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, ValueError):
            return "has a corrupt header (not a safetensors file?)"
    ends = [entry["data_offsets"][1] for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
    needed = 8 + length + max(ends, default=0)
    if size < needed:
        return f"is truncated ({size:,} of {needed:,} bytes)"
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


def looks_local(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or os.path.isdir(os.path.expanduser(spec))


def _hub_error(spec: str, exc: Exception) -> ModelLoadError:
    if looks_local(spec):
        if os.path.exists(os.path.expanduser(spec)):  # the folder is there: say what failed in it
            return ModelLoadError(f"model.name_or_path={spec}: could not load from this folder ({type(exc).__name__}: "
                                  f"{_one_line(exc)})")
        return ModelLoadError(f"model.name_or_path={spec}: no such HF folder ({type(exc).__name__})")
    return ModelLoadError(
        f"model.name_or_path={spec}: could not load from the HF hub ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}); with no network, use a local "
        "folder, model=smollm2_135m (embedded), or model.init=random"
    )


def load_tokenizer(cfg: ModelConfig):
    """The tokenizer for a model config, with a pad token set (eos when the model has none)."""
    from transformers import AutoTokenizer

    spec = cfg.tokenizer or cfg.name_or_path
    source = local_source(spec, "model.tokenizer" if cfg.tokenizer else "model.name_or_path")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except Exception as exc:  # hub and file errors come in many types; all mean "cannot load"
        raise _hub_error(spec, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_vocab(tokenizer, config) -> None:
    """ConfigError when the tokenizer has ids past the model's embedding (an index error on the
    CPU, a device-side assert on a GPU, both only after the weights load)."""
    if len(tokenizer) > config.vocab_size:
        raise ConfigError(f"model.tokenizer: the tokenizer has {len(tokenizer):,} tokens but the model's vocabulary "
                          f"has {config.vocab_size:,}; use the model's own tokenizer")


def load_config(cfg: ModelConfig):
    """The architecture config.

    Read from the model source (embedded file, local folder, hub); the preset's copy in
    ``model.arch`` is used for random init (no weights, so no source needed), for a hub id the
    hub cannot serve, and with no name_or_path.
    """
    from transformers import AutoConfig

    if cfg.name_or_path is None or (cfg.arch is not None and (cfg.init == "random" or not (
            is_pypi_path(cfg.name_or_path) or looks_local(cfg.name_or_path) or hub_reachable()))):
        arch = dict(cfg.arch)
        return AutoConfig.for_model(arch.pop("model_type"), **arch)
    spec = local_source(cfg.name_or_path)
    try:
        return AutoConfig.from_pretrained(spec, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except Exception as exc:
        raise _hub_error(cfg.name_or_path, exc) from exc


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the HF hub answers; when it does not, HF_HUB_OFFLINE is set so nothing waits on it."""
    if hub_offline():
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = "1"
        return False


def torch_dtype(precision: str) -> torch.dtype:
    """Dtype the frozen weights are stored in for a Lightning precision string."""
    import torch

    return {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(precision, torch.float32)


def compute_dtype(precision: str) -> torch.dtype:
    """Dtype the matmuls run in (bitsandbytes compute dtype)."""
    import torch

    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float32


class _FirstOfEach(logging.Filter):
    """Lets each distinct message through once."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def log_repeats_once(name: str) -> None:
    """Show each message of logger ``name`` once. bitsandbytes' int8 matmul logs the same
    bf16-to-fp16 cast warning on every call: 18 MB of log per 63-step run on an H200."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _FirstOfEach) for f in logger.filters):
        logger.addFilter(_FirstOfEach())


def bnb_config(quant: QuantConfig, precision: str):
    """transformers' BitsAndBytesConfig for a quant mode, or None for ``none``."""
    if quant.mode == "none":
        return None
    import torch

    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise ConfigError(f"quant.mode={quant.mode}: bitsandbytes is not installed (pip install bitsandbytes)") from exc
    if quant.mode == "int8":
        log_repeats_once("bitsandbytes.autograd._functions")
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.mode,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(precision),
        bnb_4bit_quant_storage=torch.uint8,
    )


def check_quant_supported(quant: QuantConfig, device: str) -> None:
    """Fail early for a quantization mode this device cannot train with."""
    if quant.mode == "none":
        return
    bnb_config(quant, "32-true")  # raises when bitsandbytes is missing
    if device == "cuda":
        import torch

        major, minor = torch.cuda.get_device_capability()
        if major < 7 or (quant.mode == "int8" and (major, minor) < (7, 5)):
            raise ConfigError(f"quant.mode={quant.mode}: needs a GPU of compute capability 7.5+, this one is {major}.{minor}")


def build_model(cfg: ModelConfig, quant: QuantConfig, precision: str, device: str):
    """Load (or randomly initialise) the causal LM, quantized per ``quant``, on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch_dtype(precision)
    quantization = bnb_config(quant, precision)
    common = dict(attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code)
    device_map = {"": torch.cuda.current_device()} if device == "cuda" else None
    if cfg.init == "random":
        config = load_config(cfg)
        config._attn_implementation = cfg.attn_implementation
        if quantization is None:
            with torch.device(device if device == "cuda" else "cpu"):
                model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
            return model
        # bitsandbytes quantizes while loading weights: save the random weights, load them quantized.
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            with torch.device(device if device == "cuda" else "cpu"):  # random init of 7B: seconds on a GPU
                AutoModelForCausalLM.from_config(config, dtype=dtype).save_pretrained(tmp)
            if device == "cuda":
                # The full-precision copy exists only because the weights are random; a pretrained
                # load never holds it, so it stays out of the run's peak.
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            return _finish_quantized(AutoModelForCausalLM.from_pretrained(
                tmp, quantization_config=quantization, dtype=dtype, device_map=device_map, **common))
    spec = local_source(cfg.name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            spec, revision=cfg.revision, dtype=dtype, quantization_config=quantization, device_map=device_map, **common
        )
    except Exception as exc:
        if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
            raise
        raise _hub_error(cfg.name_or_path, exc) from exc
    if quantization is not None:
        return _finish_quantized(model)
    return model.to(device)


def _finish_quantized(model):
    """Work around bitsandbytes' CPU 4-bit inference repacking, which corrupts LoRA gradients.

    On CPUs with AVX512-BF16, the first eval forward under no_grad repacks 4-bit weights into
    an inference layout, after which backward passes give wrong gradients.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return model
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    return model


def decoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated decoder blocks of a (peft-wrapped) transformers model, by its ``_no_split_modules``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    block_names = set(getattr(base, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in block_names]
