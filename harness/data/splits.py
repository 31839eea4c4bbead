"""What becomes of the tokenized examples: the seeded train/val/test split, the packing of the
training split, and the statistics of the finished splits."""

from __future__ import annotations

import random

from ..errors import DataError
from ..schema import DataConfig
from .common import IGNORE_INDEX, log


def split_examples(tokenized: list[dict], cfg: DataConfig) -> dict[str, list[dict]]:
    """Deterministic split by the data seed: test first, then val, then train (capped).

    test/val come from the same shuffled pool before the train cap, so ``train_size`` never
    changes them; the run seed is not involved.
    """
    need = cfg.test_size + cfg.val_size + 1
    if len(tokenized) < need:
        raise DataError(
            f"data: only {len(tokenized)} usable examples after tokenizing (max_seq_len={cfg.max_seq_len}, "
            f"overlong={cfg.overlong}); need at least data.test_size + data.val_size + 1 = {need}"
        )
    order = list(range(len(tokenized)))
    random.Random(cfg.seed).shuffle(order)
    test = order[: cfg.test_size]
    val = order[cfg.test_size: cfg.test_size + cfg.val_size]
    train = order[cfg.test_size + cfg.val_size:]
    if cfg.train_size is not None:
        train = train[: cfg.train_size]
    splits = {name: [tokenized[i] for i in idx] for name, idx in (("train", train), ("val", val), ("test", test))}
    _warn_shared_examples(splits)
    return splits


def _warn_shared_examples(splits: dict[str, list[dict]]) -> dict[str, int]:
    """Warn when val or test hold examples identical (token for token) to train's or to each
    other's: duplicates in the file put them on both sides of the split, and a held-out score on
    them measures memory. Returns the counts, e.g. ``{"test_in_train": 3}``."""
    seen = {name: {tuple(e["input_ids"]) for e in rows} for name, rows in splits.items()}
    shared = {f"{a}_in_{b}": sum(1 for e in splits[a] if tuple(e["input_ids"]) in seen[b])
              for a, b in (("val", "train"), ("test", "train"), ("test", "val"))}
    shared = {k: n for k, n in shared.items() if n}
    if shared:
        log.warning("data: the splits share examples (%s): the file holds duplicates, and held-out scores on them "
                    "measure memory; deduplicate the file for clean val/test numbers",
                    ", ".join(f"{n:,} {k.replace('_in_', ' examples also in ')}" for k, n in shared.items()))
    return shared


def pack_examples(examples: list[dict], max_seq_len: int) -> list[dict]:
    """Greedily concatenate examples, in order, into sequences of at most ``max_seq_len``.

    Each row carries ``position_ids`` that restart at 0 where each example starts: the model
    then gives every example its own positions and attends only within it (transformers builds
    the block-diagonal causal mask from them, :func:`harness.batches.model_inputs`), so a packed
    example's logits are the ones it gets alone. Each example's first label becomes -100: in a
    packed row that position would otherwise make the previous example's last token predict
    this example's first token.
    """
    packed: list[dict] = []
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in examples:
        if ids and len(ids) + len(example["input_ids"]) > max_seq_len:
            packed.append({"input_ids": ids, "labels": labels, "position_ids": positions})
            ids, labels, positions = [], [], []
        ids.extend(example["input_ids"])
        labels.append(IGNORE_INDEX)
        labels.extend(example["labels"][1:])
        positions.extend(range(len(example["input_ids"])))
    if ids:
        packed.append({"input_ids": ids, "labels": labels, "position_ids": positions})
    return packed


def split_stats(splits: dict[str, list[dict]], packed: bool) -> dict:
    """Row counts per split and the training split's tokens (all, and those trained on)."""
    return dict(
        n_train=len(splits["train"]), n_val=len(splits["val"]), n_test=len(splits["test"]),
        train_tokens=sum(len(e["input_ids"]) for e in splits["train"]),
        train_target_tokens=sum(sum(1 for t in e["labels"] if t != IGNORE_INDEX) for e in splits["train"]),
        packed=packed,
    )
