"""The arithmetic mix (``data.mix``): generated "What is 47 plus 25?" -> "72" examples added to
the training split only."""

from __future__ import annotations

import random
from collections.abc import Callable

from ..schema import DataConfig
from .common import log

# data.mix problems have a two-digit second operand; the harness_add1d probe's second operand is
# one digit (harness.lm_tasks.utils.ADD1D_MAX_SECOND_OPERAND), so no mix problem is a probe item.
MIX_OPERANDS = range(10, 100)


def arithmetic_mix(n: int, seed: int) -> list[dict]:
    """``n`` arithmetic question/answer examples (``{"instruction", "input", "output"}``, e.g.
    "What is 47 plus 25?" -> "72") for ``data.mix``: a + b and a - b (a >= b) with both operands
    in 10..99, 12,195 distinct problems, drawn without replacement in an order fixed by ``seed``
    (the pool is reshuffled and drawn again only when n exceeds it)."""
    pool = [(a, "plus", b) for a in MIX_OPERANDS for b in MIX_OPERANDS]
    pool += [(a, "minus", b) for a in MIX_OPERANDS for b in MIX_OPERANDS if a >= b]
    rng = random.Random(f"mix-{seed}")
    drawn: list[tuple] = []
    while len(drawn) < n:
        order = list(pool)
        rng.shuffle(order)
        drawn.extend(order[: n - len(drawn)])
    return [{"instruction": f"What is {a} {word} {b}?", "input": "", "output": str(a + b if word == "plus" else a - b)}
            for a, word, b in drawn]


def add_mix(train: list[dict], cfg: DataConfig,
            tokenize: Callable[[list[dict]], tuple[list[dict], dict]]) -> tuple[list[dict], int]:
    """The training split with ``round(mix / (1 - mix) * len(train))`` arithmetic examples added
    (``tokenize``: templated and tokenized like the others) and shuffled in by the data seed; all
    original examples are kept, and val/test are untouched. Returns (train, examples added)."""
    n_extra = round(cfg.mix / (1 - cfg.mix) * len(train))
    if n_extra == 0:
        return train, 0
    extra, tok_stats = tokenize(arithmetic_mix(n_extra, cfg.seed))
    if tok_stats["overlong_dropped"]:
        log.warning("data.mix: %d of %d arithmetic examples are longer than data.max_seq_len=%d and were dropped",
                    tok_stats["overlong_dropped"], n_extra, cfg.max_seq_len)
    mixed = train + extra
    random.Random(f"mix-shuffle-{cfg.seed}").shuffle(mixed)
    log.info("data.mix=%s: added %s arithmetic examples to %s training examples", cfg.mix, f"{len(extra):,}",
             f"{len(train):,}")
    return mixed, len(extra)
