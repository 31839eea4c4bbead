"""The data caches in ``$HARNESS_CACHE``: parsed examples of a large file (``data/``, JSONL plus
a stats sidecar holding the key) and tokenized examples (``tokenized/``, one npz named by the
key). Both are versioned, written atomically, and a damaged or unwritable cache only costs a
re-parse or a re-tokenize. When to cache (the size thresholds) is decided by the caller,
:mod:`harness.data`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from ..paths import atomic_write, cache_dir
from ..schema import DataConfig
from .common import IGNORE_INDEX, log

# Bump when parsing or normalization changes, so stale caches are ignored.
CACHE_VERSION = 1
_FINGERPRINT_BYTES = 1 << 20
# Bump when templating or tokenizing changes, so stale tokenized caches are ignored.
TOKENIZED_CACHE_VERSION = 1


def _store(writes: list[tuple[Path, Callable, bool]], what: str) -> None:
    """Write each (path, writer, binary) atomically, so readers never see half a file."""
    try:
        for path, write, binary in writes:
            atomic_write(path, write, binary=binary)
    except OSError as exc:  # a read-only or full cache only costs the next run the work again
        log.warning("could not cache %s data in %s: %s", what, writes[0][0].parent, exc)


# --------------------------------------------------------------------------- parsed examples


def parsed_paths(path: Path, size: int) -> tuple[Path, Path]:
    """Where the parsed examples of ``path`` and their stats sidecar are cached."""
    base = cache_dir() / "data" / f"{path.stem}-{size}"
    return base.with_name(base.name + ".jsonl"), base.with_name(base.name + ".stats.json")


def parsed_key(path: Path, size: int, fmt: str, roles: str = "strict") -> dict:
    """What must match for a cache hit: size plus a hash of the head and tail of the file.

    The name already holds the stem and size; the hash makes a different file of the same
    name and size miss (a truncated file differs at its tail) without reading all of it.
    """
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(_FINGERPRINT_BYTES))
        f.seek(max(0, size - _FINGERPRINT_BYTES))
        digest.update(f.read(_FINGERPRINT_BYTES))
    key = {"version": CACHE_VERSION, "size": size, "sha256_head_tail": digest.hexdigest(), "format": fmt}
    if fmt == "sharegpt" and roles != "strict":  # strict keeps the key (and the caches) it always had
        key["roles"] = roles
    return key


def read_parsed(cache: tuple[Path, Path], key: dict) -> tuple[list[dict], dict] | None:
    """The cached (examples, stats), or None when absent, damaged or of another key."""
    examples_path, stats_path = cache
    try:
        sidecar = json.loads(stats_path.read_text(encoding="utf-8"))
        if sidecar.get("key") != key:
            return None
        with examples_path.open(encoding="utf-8") as f:
            examples = [json.loads(line) for line in f]
    except (OSError, ValueError):
        return None  # absent or damaged: parse the file again
    stats = sidecar["stats"]
    if len(examples) != stats["examples"]:
        return None
    return examples, stats


def write_parsed(cache: tuple[Path, Path], key: dict, examples: list[dict], stats: dict) -> None:
    """Cache examples and their stats (less what depends on the reader: source, from_cache)."""
    examples_path, stats_path = cache
    stored = {k: v for k, v in stats.items() if k not in ("source", "from_cache")}
    _store([(examples_path, lambda f: f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in examples), False),
            (stats_path, lambda f: json.dump({"key": key, "stats": stored}, f, indent=1), False)], "parsed")


# --------------------------------------------------------------------------- tokenized examples


def tokenized_path(examples: list[dict], tokenizer, cfg: DataConfig) -> Path | None:
    """The cache file for these examples, tokenizer and settings; None for a slow tokenizer."""
    key = _tokenized_key(examples, tokenizer, cfg)
    return cache_dir() / "tokenized" / f"{key}.npz" if key else None


def _tokenized_key(examples: list[dict], tokenizer, cfg: DataConfig) -> str | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    digest = hashlib.sha256()
    settings = {"version": TOKENIZED_CACHE_VERSION, "class": type(tokenizer).__name__,
                "chat_template": getattr(tokenizer, "chat_template", None),
                "special_tokens": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
                "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
                "template": cfg.template, "max_seq_len": cfg.max_seq_len, "overlong": cfg.overlong,
                "train_on_prompt": cfg.train_on_prompt, "examples": len(examples)}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(backend.to_str().encode())
    for example in examples:
        for name in sorted(example):
            digest.update(f"\0{name}\0{example[name]}".encode())
    return digest.hexdigest()[:40]


def write_tokenized(path: Path, tokenized: list[dict], stats: dict) -> None:
    """One flat array of ids, offsets, and per example the count of leading masked labels
    (labels are the ids, masked on the prompt; see :func:`harness.data.tokenize_examples`)."""
    import numpy as np

    masked = [next((i for i, label in enumerate(e["labels"]) if label != IGNORE_INDEX), len(e["labels"]))
              for e in tokenized]
    if any(e["labels"][m:] != e["input_ids"][m:] for e, m in zip(tokenized, masked, strict=True)):
        return  # labels this layout cannot rebuild: leave them uncached rather than wrong
    ids = np.fromiter((i for e in tokenized for i in e["input_ids"]), dtype=np.int32)
    offsets = np.cumsum([0] + [len(e["input_ids"]) for e in tokenized], dtype=np.int64)
    _store([(path, lambda f: np.savez(f, ids=ids, offsets=offsets, masked=np.asarray(masked, dtype=np.int32),
                                      stats=np.asarray(json.dumps(stats))), True)], "tokenized")


def read_tokenized(path: Path) -> tuple[list[dict], dict] | None:
    """The cached (tokenized examples, stats), or None when absent or damaged."""
    import numpy as np

    try:
        with np.load(path) as stored:
            ids, offsets, masked = stored["ids"].tolist(), stored["offsets"].tolist(), stored["masked"].tolist()
            stats = json.loads(str(stored["stats"]))
    except (OSError, ValueError, KeyError):
        return None  # absent or damaged: tokenize again
    if len(masked) != stats.get("examples_out") or len(offsets) != len(masked) + 1:
        return None
    tokenized = []
    for start, end, m in zip(offsets[:-1], offsets[1:], masked, strict=True):
        example_ids = ids[start:end]
        tokenized.append({"input_ids": example_ids, "labels": [IGNORE_INDEX] * m + example_ids[m:]})
    return tokenized, stats
