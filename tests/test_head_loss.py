"""The pack's loss with the head on labelled positions alone (harness.head_loss) equals the
causal LM's own loss from the full logits, trial by trial, in value and in gradient."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model

from harness.batches import collate, model_inputs
from harness.head_loss import _head_logits, head_on_labels, labelled_losses, labelled_positions
from harness.models import build_model
from harness.pack_steps import causal_loss, trial_losses
from harness.packed_lora import Route, add_adapters, attach_router
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


def backward_nodes(loss: torch.Tensor) -> set[str]:
    """The names of every autograd node ``loss``'s backward runs."""
    seen, todo, names = set(), [loss.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(next_node for next_node, _ in node.next_functions)
    return names


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


def test_a_packs_adapted_head_gives_each_trial_its_own_term_on_its_own_positions():
    """Two trials adapting the head (other ranks), routed as a pack: each trial's loss and every
    gradient as from the full logits, where the routed head adds each term to its own rows."""
    runs = [compose_run(["model=tiny", "adapter.targets=all", f"adapter.r={r}", "adapter.dropout=0", f"seed={i}"])
            for i, r in enumerate([2, 8])]
    torch.manual_seed(0)
    base = build_model(runs[0].model, runs[0].quant, "32-true", "cpu")
    model, _ = add_adapters(base, runs, ["t0", "t1"], None)
    for name, param in model.named_parameters():  # peft zeroes B: give the head's terms a value
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    router = attach_router(model)
    assert head_on_labels(model)
    batch, spans = stacked_batch()
    routes = [Route(f"t{i}", s, e) for i, (s, e, _) in enumerate(spans)]

    with router.route(routes):
        expected = trial_losses(model, batch, spans, None)
    sum(expected).backward()
    expected_grads = gradients(model)
    model.zero_grad(set_to_none=True)
    with router.route(routes):
        got = trial_losses(model, batch, spans, labelled_positions(batch["labels"], spans))
        # the trials' terms are joined, not added into slices of the logits: an in-place add into
        # a slice copies the whole logits' gradient once per trial in backward (CopySlices)
        hidden = torch.randn(4, batch["labels"].shape[1], model.config.hidden_size, requires_grad=True)
        head = _head_logits(model.get_output_embeddings(), hidden, labelled_positions(batch["labels"], spans))
        assert "CopySlices" not in backward_nodes(head.sum())
    sum(got).backward()
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)
    got_grads = gradients(model)
    assert any("lm_head" in name for name in got_grads) and got_grads.keys() == expected_grads.keys()
    for name, grad in got_grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_an_adapted_head_outside_a_pack_sees_every_position():
    assert not head_on_labels(tiny_lora(["lm_head", "q_proj"]))
