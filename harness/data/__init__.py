"""Instruction data: the pipeline from a file to train/val/test splits.

Plain builder functions; batching the finished splits is :mod:`harness.batches`. The pipeline
is::

    load_examples(cfg)            -> [{"instruction", "input", "output"}], stats
    tokenize_examples(ex, tok, cfg) -> [{"input_ids", "labels"}], stats  (cached for large data)
    build_splits(cfg, tok)        -> {"train", "val", "test"}, stats

This module holds those three steps and the cache thresholds, composed from one module per
role: :mod:`.files` (reading records), :mod:`.formats` (records into examples),
:mod:`.templates` and :mod:`.tokenization`, :mod:`.cache` (both on-disk caches), :mod:`.mix`
(the arithmetic mix) and :mod:`.splits` (split, pack, statistics). The names callers use are
re-exported here.

Every user error (missing/empty/malformed/non-UTF-8 file, missing field, unreachable hub,
a tokenizer without a chat template) is a :class:`DataError` (or, for a path that does not
exist, :class:`~harness.paths.MissingPathError`) with a one-line message naming the config
key, the file and the line or record, raised before tokenization starts.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..schema import DataConfig
from . import cache
from .cache import CACHE_VERSION, TOKENIZED_CACHE_VERSION
from .common import IGNORE_INDEX, log
from .files import read_file, read_hub, resolve_file
from .formats import ASSISTANT_ROLES, MAX_EXAMPLE_CHARS, USER_ROLES, normalize
from .mix import MIX_OPERANDS, add_mix, arithmetic_mix
from .splits import pack_examples, split_examples, split_stats
from .templates import ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT, check_template
from .tokenization import tokenize_examples

__all__ = [
    "ALPACA_PROMPT_INPUT", "ALPACA_PROMPT_NO_INPUT", "ASSISTANT_ROLES", "CACHE_MIN_BYTES", "CACHE_VERSION",
    "IGNORE_INDEX", "MAX_EXAMPLE_CHARS", "MIX_OPERANDS", "TOKENIZED_CACHE_MIN_EXAMPLES",
    "TOKENIZED_CACHE_VERSION", "USER_ROLES", "DataError", "arithmetic_mix", "build_splits", "check_template",
    "load_examples", "pack_examples", "split_examples", "tokenize_examples", "tokenize_examples_cached",
]

# The thresholds live here, not in .cache, and the three steps below read them (and
# tokenize_examples) from this module's namespace: tests lower them with
# monkeypatch.setattr(harness.data, ...), which only reaches a name looked up here.

# Files at least this large have their normalized examples cached (small files parse in
# milliseconds, so caching them would only litter the cache). Tests lower it.
CACHE_MIN_BYTES = 8 << 20
# Data of at least this many examples has its tokenized form cached, so sweep trials on the same
# data and tokenizer tokenize it once (the embedded 11k examples take seconds). Tests lower it.
TOKENIZED_CACHE_MIN_EXAMPLES = 2000


def load_examples(cfg: DataConfig) -> tuple[list[dict], dict]:
    """Load and normalize the examples named by ``cfg`` (a file or an HF hub dataset).

    Returns ``(examples, stats)``: every example is ``{"instruction", "input", "output"}``
    (strings); ShareGPT records contribute their first human -> assistant turn only (after a
    leading system turn), and records without one are skipped and counted. ``stats`` has
    ``source``, ``records_read``, ``records_recovered`` (int when a truncated JSON array was
    recovered, else None), ``truncated_file``, ``examples``, ``skipped_records``,
    ``skip_reasons``, ``human_first`` (ShareGPT: records whose first turn is the human's,
    else None) and ``from_cache``.

    Raises :class:`DataError` (or :class:`MissingPathError` for a missing file) with a
    one-line message.
    """
    if cfg.hf_name is not None:
        records, locate = read_hub(cfg)
        examples, stats = normalize(records, locate, cfg.format, f"data.hf_name={cfg.hf_name}", cfg.roles)
        stats.update(source=f"hf:{cfg.hf_name}" + (f"/{cfg.hf_subset}" if cfg.hf_subset else "")
                     + f"[{cfg.hf_split}]", records_recovered=None, truncated_file=False, from_cache=False)
        _log_loaded(stats)
        return examples, stats

    path = resolve_file(cfg.path)
    where = f"data.path={cfg.path}"
    size = path.stat().st_size
    paths = cache.parsed_paths(path, size) if size >= CACHE_MIN_BYTES else None
    key = cache.parsed_key(path, size, cfg.format, cfg.roles) if paths else None
    if paths and (hit := cache.read_parsed(paths, key)) is not None:
        examples, stats = hit
        _check_truncation_allowed(stats, cfg, where)
        stats.update(source=str(path), from_cache=True)
        _log_loaded(stats, cached=paths[0])
        return examples, stats

    records, locate, recovered = read_file(path, where, cfg.recover_truncated)
    examples, stats = normalize(records, locate, cfg.format, where, cfg.roles)
    stats.update(source=str(path), records_recovered=recovered, truncated_file=recovered is not None,
                 from_cache=False)
    if paths:
        cache.write_parsed(paths, key, examples, stats)
    _log_loaded(stats)
    return examples, stats


def _check_truncation_allowed(stats: dict, cfg: DataConfig, where: str) -> None:
    # A cache hit skips the parse that would refuse a truncated file, so the rule is checked here.
    if stats["truncated_file"] and not cfg.recover_truncated:
        raise DataError(f"{where}: truncated JSON array; set data.recover_truncated=true to keep "
                        "the complete records")


def _log_loaded(stats: dict, cached: Path | None = None) -> None:
    if stats["truncated_file"]:
        log.info("recovered %s complete records from a truncated JSON array%s",
                 f"{stats['records_recovered']:,}", f" (cached in {cached})" if cached else "")
    log.info("loaded %s examples from %s (%s records read, %s skipped: %s)",
             f"{stats['examples']:,}", stats["source"], f"{stats['records_read']:,}",
             f"{stats['skipped_records']:,}", dict(stats["skip_reasons"]) or "none")


def tokenize_examples_cached(examples: list[dict], tokenizer, cfg: DataConfig) -> tuple[list[dict], dict]:
    """:func:`tokenize_examples`, through a cache in ``$HARNESS_CACHE/tokenized`` for data of at
    least ``TOKENIZED_CACHE_MIN_EXAMPLES`` examples.

    The cache key covers the examples' text, the tokenizer (its serialized fast tokenizer,
    chat template and special tokens) and the settings that change tokens: ``template``,
    ``max_seq_len``, ``overlong`` and ``train_on_prompt``. Split sizes, seeds and packing come
    later and do not enter it. A slow (Python) tokenizer is never cached. Stats gain
    ``tokenized_from_cache``.
    """
    big = len(examples) >= TOKENIZED_CACHE_MIN_EXAMPLES
    path = cache.tokenized_path(examples, tokenizer, cfg) if big else None
    if path is not None and (hit := cache.read_tokenized(path)) is not None:
        tokenized, stats = hit
        log.info("tokenized examples read from the cache (%s): %s kept", path.name, f"{len(tokenized):,}")
        return tokenized, {**stats, "tokenized_from_cache": True}
    tokenized, stats = tokenize_examples(examples, tokenizer, cfg)
    if path is not None:
        cache.write_tokenized(path, tokenized, stats)
    return tokenized, {**stats, "tokenized_from_cache": False}


def build_splits(cfg: DataConfig, tokenizer, loaded: tuple[list[dict], dict] | None = None) -> tuple[dict[str, list[dict]], dict]:
    """Load, tokenize, split and (if ``cfg.packing``) pack the training data.

    ``loaded``: the result of :func:`load_examples`, when the caller parsed the data already
    (to report data errors before loading the tokenizer or the model).

    Returns ``({"train", "val", "test"}, stats)``; stats merge :func:`load_examples` and
    :func:`tokenize_examples_cached` stats with ``n_train`` (rows, packed or not),
    ``n_train_examples`` (with the ``data.mix`` examples), ``mix_examples`` (how many were
    added), ``n_val``, ``n_test``, ``train_tokens``, ``train_target_tokens`` and ``packed``. Only
    the training split is ever mixed or packed.
    """
    check_template(tokenizer, cfg)  # cheap, and before the file is parsed
    examples, stats = loaded if loaded is not None else load_examples(cfg)
    stats = dict(stats)
    tokenized, tok_stats = tokenize_examples_cached(examples, tokenizer, cfg)
    stats.update(tok_stats)
    splits = split_examples(tokenized, cfg)
    splits["train"], stats["mix_examples"] = add_mix(splits["train"], cfg,
                                                     lambda extra: tokenize_examples(extra, tokenizer, cfg))
    stats["n_train_examples"] = len(splits["train"])
    if cfg.packing:
        splits["train"] = pack_examples(splits["train"], cfg.max_seq_len)
    stats.update(split_stats(splits, cfg.packing))
    log.info("splits: train %s%s, val %s, test %s (%s train tokens)", f"{stats['n_train']:,}",
             f" packed rows from {stats['n_train_examples']:,} examples" if cfg.packing else "",
             f"{stats['n_val']:,}", f"{stats['n_test']:,}", f"{stats['train_tokens']:,}")
    return splits, stats
