"""Dropout inside blocks compiled the harness's way (:func:`harness.speed.compile_blocks`).

Compiled blocks draw their dropout masks in the graph, not from each trial's own stream
(docs/sweeps.md), so nothing else checks that those masks are right: the rate, a fresh mask for
every block and step (the decoder blocks share one compiled graph, and under CUDA graphs its
replays), and backward on the forward's mask. The blocks run as a decoder runs them, a chain,
each on the last one's output, then one backward, for as many steps as it takes to replay
recorded graphs. (Calling each block on an input of its own before one backward is not how a
decoder runs them, and under CUDA graphs it fails: a later call overwrites an earlier call's
saved outputs; an H100 run of 2026-12-06 found that in this test's first version.)
"""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch import nn

P = 0.25  # large enough that a rate off by a few points shows over 64k elements


class Block(nn.Module):
    """``x + A(dropout(x))`` with ``A`` the identity, so ``y = x * (1 + mask / (1 - P))``.
    ``stacked``: the dropout of a compiled pack's batched group (three trials' rows stacked,
    :func:`harness.packed_lora._stacked_dropout`) instead of ``nn.Dropout``'s."""

    def __init__(self, width: int, stacked: bool = False):
        super().__init__()
        self.lora_A = nn.Linear(width, width, bias=False)
        nn.init.eye_(self.lora_A.weight)
        self.dropout = nn.Dropout(P)
        self.stacked = stacked
        self.lora_dropout = nn.ModuleDict({name: nn.Dropout(P) for name in "abc"})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.stacked:
            return x + self.lora_A(self.dropout(x))
        from harness.packed_lora import _stacked_dropout

        return x + self.lora_A(_stacked_dropout(self, list("abc"), x.view(3, -1, x.shape[-1])).view_as(x))


class Blocks(nn.Module):
    _no_split_modules = ["Block"]  # how harness.models.decoder_blocks finds the repeated blocks

    def __init__(self, n: int, width: int, stacked: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(Block(width, stacked) for _ in range(n))


def mask_of(ratio: torch.Tensor) -> torch.Tensor:
    """The kept entries, from a block's ``output / input`` (or ``grad_in / grad_out``) ratio."""
    return ((ratio - 1) * (1 - P)).round().bool().cpu()


def masks_of_one_step(model: Blocks, rows: int, width: int, device: str) -> tuple[list, list]:
    """Each block's forward mask (from its output over its input) and backward mask (from the
    gradient at its input over the gradient at its output), the blocks run as a chain."""
    hidden = [torch.ones(rows, width, device=device, requires_grad=True)]
    for block in model.layers:
        hidden.append(block(hidden[-1]))
    values = [h.detach().clone() for h in hidden]  # copied before anything runs again
    forward = [mask_of(out / inp) for inp, out in pairwise(values)]
    grads = [*torch.autograd.grad(hidden[-1].sum(), hidden[:-1]), torch.ones_like(values[-1])]
    backward = [mask_of(g_in / g_out) for g_in, g_out in pairwise(grads)]
    return forward, backward


@pytest.mark.parametrize("device, mode", [
    ("cpu", "default"),
    pytest.param("cuda", "reduce-overhead", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU")]),
])
@pytest.mark.parametrize("stacked", [False, True], ids=["dropout", "pack_group"])
def test_compiled_blocks_draw_fresh_dropout_masks_at_their_rate_and_backward_reuses_them(device, mode, stacked):
    from harness.speed import compile_blocks

    rows, width, n = 255, 256, 3  # 255 rows: three trials' 85 each in the pack group's stack
    model = Blocks(n, width, stacked).to(device).train()
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
