"""The pack's loss with the head on labelled positions alone (harness.head_loss) equals the
causal LM's own loss from the full logits, trial by trial, in value and in gradient."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from harness.batches import collate, model_inputs
from harness.head_loss import head_on_labels, labelled_losses, labelled_positions
from harness.models import build_model
from harness.pack_steps import causal_loss
from tests.helpers import compose_run


def tiny_lora(targets: list[str]):
    run = compose_run(["model=tiny"])
    torch.manual_seed(0)
    base = build_model(run.model, run.quant, "32-true", "cpu")
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))


def stacked_batch() -> tuple[dict, list[tuple[int, int, int]]]:
    """Two trials' rows, of other lengths and prompt masks; the third row has no label at all."""
    gen = torch.Generator().manual_seed(1)
    rows = []
    for n, prompt in [(9, 3), (21, 10), (5, 5), (14, 0)]:
        ids = torch.randint(3, 1000, (n,), generator=gen).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return collate(rows, pad_id=2), [(0, 1, 0), (1, 4, 0)]


def gradients(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_the_head_on_labelled_positions_gives_each_trial_the_full_logits_loss_and_gradient():
    model = tiny_lora(["q_proj", "v_proj", "down_proj"])
    assert head_on_labels(model)
    batch, spans = stacked_batch()
    positions = labelled_positions(batch["labels"], spans)
    # position t predicts label t + 1: row 0's 9 tokens, prompt of 3, give 6 labelled positions
    assert positions.counts == [6, 11 + 0 + 14 - 1]

    full = model(**model_inputs(batch)).logits
    expected = [causal_loss(model, full[s:e], batch["labels"][s:e]) for s, e, _ in spans]
    sum(expected).backward()
    expected_grads = gradients(model)
    model.zero_grad(set_to_none=True)

    got = labelled_losses(model, model_inputs(batch), positions)
    sum(got).backward()
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)
    got_grads = gradients(model)
    assert got_grads.keys() == expected_grads.keys() and got_grads
    for name, grad in got_grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_a_trial_without_labels_gets_the_nan_loss_it_gets_from_the_full_logits():
    model = tiny_lora(["q_proj"])
    batch, _ = stacked_batch()
    spans = [(2, 3, 0)]  # the row whose every token is prompt
    got, = labelled_losses(model, model_inputs(batch), labelled_positions(batch["labels"], spans))
    expected = causal_loss(model, model(**model_inputs(batch)).logits[2:3], batch["labels"][2:3])
    assert torch.isnan(got) and torch.isnan(expected)


@pytest.mark.parametrize("targets", [["lm_head", "q_proj"]])
def test_an_adapted_head_sees_every_position(targets):
    assert not head_on_labels(tiny_lora(targets))
