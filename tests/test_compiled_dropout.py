"""Dropout inside blocks compiled the harness's way (:func:`harness.speed.compile_blocks`).

Compiled blocks draw their dropout masks in the graph, not from each trial's own stream
(docs/sweeps.md), so nothing else checks that those masks are right: the rate, a fresh mask for
every block and step (the decoder blocks share one compiled graph, and under CUDA graphs its
replays), and backward on the forward's mask. Several blocks sharing one compiled graph, each
called on its own input in one training step, as many steps as it takes to replay recorded
graphs. (Written to test one suspect for the compiled packs' held-out NLL in the 2026-12-05 A/B;
a CPU check then showed the gap without dropout too: docs/benchmarks.md.)
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

P = 0.25  # large enough that a rate off by a few points shows over 64k elements


class Block(nn.Module):
    """``x + A(dropout(x))`` with ``A`` the identity: the output minus the input is the mask, scaled."""

    def __init__(self, width: int):
        super().__init__()
        self.lora_A = nn.Linear(width, width, bias=False)
        nn.init.eye_(self.lora_A.weight)
        self.dropout = nn.Dropout(P)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.lora_A(self.dropout(x))


class Blocks(nn.Module):
    _no_split_modules = ["Block"]  # how harness.models.decoder_blocks finds the repeated blocks

    def __init__(self, n: int, width: int):
        super().__init__()
        self.layers = nn.ModuleList(Block(width) for _ in range(n))


def masks_of_one_step(model: Blocks, rows: int, width: int, device: str) -> tuple[list, list]:
    """Each block's forward mask (from its output) and backward mask (from its input's gradient)."""
    inputs = [torch.ones(rows, width, device=device, requires_grad=True) for _ in model.layers]
    outputs = [block(x) for block, x in zip(model.layers, inputs, strict=True)]
    forward = [((y.detach() - 1) * (1 - P)).round().bool().cpu() for y in outputs]
    sum(y.sum() for y in outputs).backward()
    backward = [((x.grad - 1) * (1 - P)).round().bool().cpu() for x in inputs]
    return forward, backward


@pytest.mark.parametrize("device, mode", [
    ("cpu", "default"),
    pytest.param("cuda", "reduce-overhead", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU")]),
])
def test_compiled_blocks_draw_fresh_dropout_masks_at_their_rate_and_backward_reuses_them(device, mode):
    from harness.speed import compile_blocks

    rows, width, n = 256, 256, 3
    model = Blocks(n, width).to(device).train()
    assert compile_blocks(model, mode) == n
    seen = []
    for step in range(4):  # CUDA graphs record on a later call than the first, then replay
        forward, backward = masks_of_one_step(model, rows, width, device)
        for block, (kept, kept_backward) in enumerate(zip(forward, backward, strict=True)):
            # The rate: 1 - P of the entries kept, within 5 binomial SDs (about 0.008 here).
            assert abs(kept.float().mean().item() - (1 - P)) < 5 * ((P * (1 - P)) / kept.numel()) ** 0.5, (step, block)
            # Backward differentiates the mask forward drew, not another draw.
            assert torch.equal(kept, kept_backward), (step, block)
        seen += forward
    # Every block at every step drew its own mask: two independent masks agree on
    # P^2 + (1-P)^2 of the entries (0.625 here), never on all of them.
    for i in range(len(seen)):
        for j in range(i):
            assert not torch.equal(seen[i], seen[j]), (i, j)
            assert (seen[i] == seen[j]).float().mean().item() < 0.7
