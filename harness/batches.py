"""Batches for training: right-padded collation, a resumable seeded shuffle, and the Lightning
data module over the splits that :func:`harness.data.build_splits` makes.

Kept apart from ``harness.data`` so parsing and checking data (the sweep driver does it once
per sweep) does not import Lightning.
"""

from __future__ import annotations

import functools
import math

import lightning as L
import torch
from torch.utils.data import DataLoader

from .data import IGNORE_INDEX


def collate(batch: list[dict], pad_id: int, widths: tuple[int, ...] = ()) -> dict:
    """Right-pad a batch: input_ids with ``pad_id``, labels with -100, attention_mask 1/0, and
    ``num_tokens`` (an int: the non-padding tokens). Rows of packed examples
    (:func:`harness.data.pack_examples`) also get ``position_ids``, their padding its own run
    from 0 (a sequence of its own, which no example attends to).

    The padded length is the longest sequence rounded up to a multiple of 8 (tensor-core
    friendly shapes, at most 7 extra columns), or, when ``widths`` are given, the smallest of
    them that holds it: batches then take only those shapes (what CUDA graphs need, see
    :class:`InstructionDataModule`).
    """
    longest = max(len(e["input_ids"]) for e in batch)
    width = min((w for w in widths if w >= longest), default=int(math.ceil(longest / 8) * 8))
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"], dtype=torch.long)
        labels[row, :n] = torch.tensor(example["labels"], dtype=torch.long)
        attention_mask[row, :n] = 1
    # Counted here, on the host: counting the mask on the GPU would sync every micro-batch.
    num_tokens = sum(len(e["input_ids"]) for e in batch)
    out = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "num_tokens": num_tokens}
    if "position_ids" in batch[0]:
        out["position_ids"] = torch.stack([torch.tensor(e["position_ids"] + list(range(width - len(e["position_ids"]))))
                                           for e in batch])
    return out


def to_device(tensor: torch.Tensor, device: str) -> torch.Tensor:
    """A host tensor on ``device``; to a GPU from pinned memory without waiting (a copy from
    pageable memory first waits for the stream's queued work, so the host could not queue the
    next step while the GPU runs this one)."""
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def model_inputs(batch: dict) -> dict:
    """A training or validation forward's inputs from a collated batch: ``input_ids`` with its
    ``attention_mask``, or, for packed rows, with their ``position_ids`` and no mask; and
    ``use_cache=False``. transformers builds the causal mask per example from position ids that
    restart at 0 only when no 2-D mask and no KV cache are given
    (``masking_utils.find_packed_sequence_indices``): with either, each packed example would
    attend to the ones before it in its row. Without packing, no cache saves building one (and,
    under torch.compile, its per-layer state forces recompiles)."""
    if "position_ids" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}


class ResumableShuffle(torch.utils.data.Sampler):
    """A seeded shuffle, a new order each epoch (``seed + epoch``), that can start mid-epoch.

    ``consumed`` counts the micro-batches training has taken this epoch (the data module
    advances it on each batch that reaches the model, so batches Lightning prefetched but never
    trained on are not counted); a checkpoint stores it, and a resumed run skips exactly those.
    """

    def __init__(self, n: int, seed: int, batch_size: int):
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self.epoch = 0
        self.consumed = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._skip = epoch, 0

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        start, self._skip = self._skip * self.batch_size, 0
        self.consumed = start // self.batch_size
        return iter(order[start:])

    def __len__(self) -> int:
        return self.n

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self._skip = int(state["epoch"]), int(state["consumed"])


class ResumableLoader(DataLoader):
    """A DataLoader whose position Lightning saves in checkpoints and restores on resume."""

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


class InstructionDataModule(L.LightningDataModule):
    """DataLoaders over already built splits (see :func:`build_splits`).

    The training order is shuffled by :class:`ResumableShuffle`, seeded with the run ``seed``,
    so a run's data order is reproducible, also across an interruption and resume.
    ``widths``: the only widths batches take (:func:`harness.speed.batch_widths` under CUDA graphs, which
    record one graph per batch shape; with ``data.packing=true`` little of it is padding).
    """

    def __init__(self, splits: dict[str, list[dict]], pad_id: int, micro_batch_size: int, seed: int,
                 num_workers: int = 0, widths: tuple[int, ...] = ()):
        super().__init__()
        self.widths = widths
        self.splits = splits
        self.pad_id = pad_id
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.num_workers = num_workers

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        # Each loader has its own generator: starting an iterator must not draw from the global
        # RNG, which LoRA dropout uses and a resumed run restores to the interrupted run's state.
        kwargs = dict(batch_size=self.micro_batch_size, drop_last=False, num_workers=self.num_workers,
                      persistent_workers=self.num_workers > 0, collate_fn=functools.partial(collate, pad_id=self.pad_id, widths=self.widths),
                      generator=torch.Generator().manual_seed(self.seed))
        if not shuffle:
            return DataLoader(self.splits[name], **kwargs)
        self.train_sampler = ResumableShuffle(len(self.splits[name]), self.seed, self.micro_batch_size)
        return ResumableLoader(self.splits[name], sampler=self.train_sampler, **kwargs)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.trainer is not None and self.trainer.training and getattr(self, "train_sampler", None) is not None:
            self.train_sampler.consumed += 1
        return batch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
