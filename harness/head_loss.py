"""The causal-LM loss of a pack's trials with the output head run only where a label is.

A pack's stacked batch is mostly positions without a label: the prompt (masked), the padding to
the stack's width, and each row's last token. The default data's stacks of five trials label
about 41% of their positions. transformers' causal LM runs its head over every position (a
``rows x width x vocab`` logits tensor, 49,152 words for the embedded model, cast to float32 for
the loss) and then ignores most of it. Here the decoder runs as usual; the head and the cross
entropy run over the labelled positions alone, gathered by indices counted on the host (no wait
on the device). Each trial's loss is the mean over its own labelled tokens, which is what
:func:`transformers.loss.loss_utils.ForCausalLMLoss` computes from the full logits.

Only for heads that are a plain linear map of the final hidden state (:data:`PLAIN_HEAD_TYPES`):
frozen, or adapted by LoRA in a pack (each trial's term on its own positions, its dropout drawn
over its rows as alone: :func:`harness.packed_lora.gathered_term`). Any other model takes the full
logits (:func:`head_on_labels`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX

# Model types whose causal LM computes ``logits = lm_head(final hidden state)`` and nothing more
# (no soft-capping, logit scale or extra heads): gathering the hidden states first is the same map.
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


@dataclass(frozen=True)
class LabelledPositions:
    """Where a stacked batch's loss is: the flat indices of the positions whose next token is
    labelled, that token, and how many of them fall in each trial's rows (in span order)."""

    index: torch.Tensor
    targets: torch.Tensor
    counts: list[int]

    def to(self, device: str) -> LabelledPositions:
        from .batches import to_device

        return LabelledPositions(to_device(self.index, device), to_device(self.targets, device), self.counts)


def labelled_positions(labels: torch.Tensor, spans: list[tuple[int, int, int]]) -> LabelledPositions:
    """The labelled positions of a host-side ``labels`` (rows x width) batch, for trials whose
    rows are ``spans`` (start, end, ...; in row order, rows outside them left out): position t
    predicts label t + 1, as the causal loss shifts."""
    shifted = torch.full_like(labels, IGNORE_INDEX)
    shifted[:, :-1] = labels[:, 1:]
    in_spans = torch.zeros(labels.shape[0], dtype=torch.bool)
    for s, e, *_ in spans:
        in_spans[s:e] = True
    keep = (shifted != IGNORE_INDEX) & in_spans[:, None]
    counts = [int(keep[s:e].sum()) for s, e, *_ in spans]
    return LabelledPositions(keep.flatten().nonzero().squeeze(1), shifted[keep], counts)


def head_on_labels(model) -> bool:
    """Whether this (peft-wrapped) causal LM's loss may run its head on labelled positions
    alone: a plain linear head (:data:`PLAIN_HEAD_TYPES`), frozen or a pack's routed LoRA layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = model.get_base_model()
    head = base.get_output_embeddings()
    if isinstance(head, BaseTunerLayer):
        plain = hasattr(head, "_pack_router") and isinstance(head.get_base_layer(), torch.nn.Linear)
    else:
        plain = isinstance(head, torch.nn.Linear)
    return getattr(base.config, "model_type", None) in PLAIN_HEAD_TYPES and plain


def _head_logits(head, hidden: torch.Tensor, positions: LabelledPositions) -> torch.Tensor:
    """The head's logits at ``positions`` of ``hidden`` ([rows, width, hidden]); a pack's LoRA
    head adds each routed trial's term on its own positions. The trials' parts are joined with
    one concatenation: an add into each trial's slice of the logits would, in backward, copy the
    gradient of the whole logits once per trial (autograd's ``CopySlices``: on an H100, about 2 ms
    of a pack of five's 55 ms of kernels a pass)."""
    from .packed_lora import gathered_term

    width = hidden.shape[1]
    picked = hidden.flatten(0, 1).index_select(0, positions.index)
    routes = getattr(getattr(head, "_pack_router", None), "routes", None)
    if routes is None or head.disable_adapters or head.merged:
        return head(picked)
    base = head.get_base_layer()(picked)
    parts, start = [], 0
    for route, count in zip(routes, positions.counts, strict=True):
        part = base[start:start + count]
        if route.name in head.lora_A:  # a trial without labels here still draws its dropout, as alone
            local = positions.index[start:start + count] - route.start * width
            part = part + gathered_term(head, hidden[route.start:route.stop], route, local, part)
        parts.append(part)
        start += count
    return torch.cat(parts)  # the counts cover every gathered position


def labelled_losses(model, inputs: dict, positions: LabelledPositions) -> list[torch.Tensor]:
    """Each trial's causal-LM loss (mean over its labelled tokens, NaN where it has none, as
    transformers' loss) from the decoder's hidden states with the head on ``positions`` alone.
    ``inputs``: the forward's inputs (:func:`harness.batches.model_inputs`), on the model's device;
    a pack's routes (one per span of ``positions``, in order) set."""
    base = model.get_base_model()
    hidden = base.get_decoder()(**inputs).last_hidden_state
    logits = _head_logits(base.get_output_embeddings(), hidden, positions).float()
    token_losses = F.cross_entropy(logits, positions.targets, reduction="none")
    # a tensor over 0 is NaN, as transformers' mean over no tokens
    return [part.sum() / count for part, count in zip(token_losses.split(positions.counts), positions.counts, strict=True)]
