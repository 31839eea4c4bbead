"""Tokenization: templated examples into ``{"input_ids", "labels"}`` with the prompt masked
(unless ``data.train_on_prompt``) and the overlong rule (``data.overlong``) applied."""

from __future__ import annotations

from ..schema import DataConfig
from .common import IGNORE_INDEX, log
from .templates import check_template, render


def _batched_ids(tokenizer, texts: list[str], add_special_tokens: bool, chunk: int = 1024) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), chunk):
        enc = tokenizer(texts[i:i + chunk], add_special_tokens=add_special_tokens,
                        return_attention_mask=False, verbose=False)
        out.extend(enc["input_ids"])
    return out


def tokenize_examples(examples: list[dict], tokenizer, cfg: DataConfig) -> tuple[list[dict], dict]:
    """Template and tokenize examples into ``{"input_ids", "labels"}``.

    Prompt and response are tokenized separately and concatenated, so the prompt ids are
    exactly a prefix of the full ids; labels are -100 on the prompt unless
    ``cfg.train_on_prompt``. Examples longer than ``cfg.max_seq_len`` are dropped or cut to
    the first max_seq_len tokens (``cfg.overlong``); a cut example keeping no response token
    is dropped. Stats: ``examples_in``, ``overlong_dropped``, ``overlong_truncated``,
    ``examples_out``.
    """
    check_template(tokenizer, cfg)
    if not examples:
        return [], dict(examples_in=0, overlong_dropped=0, overlong_truncated=0, examples_out=0)
    prompts, responses, end_ids, prompt_specials = render(examples, tokenizer, cfg)
    limit = cfg.max_seq_len
    prompt_ids = _batched_ids(tokenizer, prompts, prompt_specials)
    # A prompt that fills max_seq_len leaves no response token under either overlong rule, so
    # its (often long) response is never tokenized: that saves a large share of the time.
    fits = [i for i, p in enumerate(prompt_ids) if len(p) < limit]
    response_ids = _batched_ids(tokenizer, [responses[i] for i in fits], False)
    out: list[dict] = []
    dropped, truncated = len(examples) - len(fits), 0
    for i, r in zip(fits, response_ids, strict=True):
        p = prompt_ids[i]
        ids = p + r + end_ids
        labels = list(ids) if cfg.train_on_prompt else [IGNORE_INDEX] * len(p) + r + end_ids
        if len(ids) > limit:
            if cfg.overlong == "drop":
                dropped += 1
                continue
            ids, labels = ids[:limit], labels[:limit]
            truncated += 1
        out.append({"input_ids": ids, "labels": labels})
    stats = dict(examples_in=len(examples), overlong_dropped=dropped, overlong_truncated=truncated,
                 examples_out=len(out))
    log.info("tokenized %s examples (max_seq_len=%d, overlong=%s): %s dropped, %s truncated, %s kept",
             f"{len(examples):,}", limit, cfg.overlong, f"{dropped:,}", f"{truncated:,}", f"{len(out):,}")
    return out, stats
