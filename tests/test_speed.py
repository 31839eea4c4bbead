"""Speed switches keep the loss: each one against the plain path on the tiny model, same seed.
(How fast they are is measured by ``python -m harness.bench`` on a GPU, docs/benchmarks.md.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.speed import RecomputedDropoutLinear, recompute_lora_dropout
from tests.helpers import tiny, train_in_process

# switch -> extra overrides the comparison needs. The CPU tests run each switch where it can run
# here; liger-kernel needs CUDA and is checked in tests/test_gpu.py.
CPU_SWITCHES = {
    "trainer.compile=true": ["adapter.dropout=0"],  # compiled dropout draws other random numbers
    "trainer.recompute_lora_dropout=true": ["adapter.dropout=0.2"],
}


@pytest.mark.parametrize("switch", list(CPU_SWITCHES))
def test_speed_switches_keep_the_loss_of_the_plain_path(chat_file, tmp_path, switch):
    args = tiny(chat_file, "trainer.max_steps=3", "adapter.targets=all_linear", *CPU_SWITCHES[switch])
    plain = train_in_process(args, tmp_path / "plain")
    fast = train_in_process([*args, switch], tmp_path / "fast")
    assert plain["status"] == fast["status"] == "ok", fast.get("error")
    assert fast["train_losses"] == pytest.approx(plain["train_losses"], rel=1e-3)
    assert fast["val_loss_last"] == pytest.approx(plain["val_loss_last"], rel=1e-3)


def test_recomputed_dropout_draws_the_same_mask_and_gradients():
    torch.manual_seed(0)
    linear = nn.Linear(32, 4, bias=False)
    x = torch.randn(6, 32, requires_grad=True)
    torch.manual_seed(1)
    plain = linear(nn.functional.dropout(x, 0.5, training=True))
    plain.pow(2).sum().backward()
    plain_grads = (x.grad.clone(), linear.weight.grad.clone())
    x.grad = linear.weight.grad = None

    folded = RecomputedDropoutLinear(linear, 0.5)
    assert folded.weight is linear.weight  # the same parameter: same state-dict key and value
    torch.manual_seed(1)
    out = folded(x)
    torch.manual_seed(99)  # the backward redraw must not depend on the RNG's state by then
    out.pow(2).sum().backward()
    torch.testing.assert_close(out, plain)
    torch.testing.assert_close((x.grad, linear.weight.grad), plain_grads)
    # What autograd keeps for backward: plain dropout keeps the mask, the weight and the dropped
    # copy; the folded one keeps only its input, which every adapter reading it shares.
    assert saved_shapes(lambda: linear(nn.functional.dropout(x, 0.5, training=True))) == [(6, 32), (32, 4), (6, 32)]
    assert saved_shapes(lambda: folded(x)) == [(6, 32)]
    assert folded.eval()(x).equal(linear(x))  # no dropout in eval mode


def saved_shapes(forward) -> list[tuple[int, ...]]:
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        forward()
    return shapes


def test_recompute_folds_lora_dropout_and_keeps_the_adapter_format(tmp_path):
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from harness.adapters import lora_config
    from harness.models import load_config
    from harness.schema import AdapterConfig
    from tests.helpers import compose_run

    run = compose_run(["model=tiny"])
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(load_config(run.model))
    model = get_peft_model(base, lora_config(AdapterConfig(targets="all_linear", dropout=0.1)))
    keys = set(model.state_dict())
    assert recompute_lora_dropout(model) == 2 * 7  # two layers, seven linears each
    assert set(model.state_dict()) == keys
    assert recompute_lora_dropout(model) == 0  # already folded
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_config(load_config(run.model)), tmp_path / "adapter")
    names = {n for n, _ in reloaded.named_parameters() if "lora_" in n}
    assert names == {n for n, _ in model.named_parameters() if "lora_" in n}


def test_dora_and_dropout_free_adapters_are_left_as_they_are():
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from harness.adapters import lora_config
    from harness.models import load_config
    from harness.schema import AdapterConfig
    from tests.helpers import compose_run

    arch = load_config(compose_run(["model=tiny"]).model)
    for adapter in (AdapterConfig(kind="dora", dropout=0.1), AdapterConfig(dropout=0.0)):
        model = get_peft_model(AutoModelForCausalLM.from_config(arch), lora_config(adapter))
        assert recompute_lora_dropout(model) == 0


def test_liger_kernels_need_a_gpu(chat_file, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from harness.schema import ConfigError

    with pytest.raises(ConfigError, match="trainer.liger_kernels=true: .*CUDA GPU"):
        train_in_process(tiny(chat_file, "trainer.liger_kernels=true"), tmp_path)
    assert not (tmp_path / "record.json").exists()


def test_cuda_graphs_pad_batches_to_a_few_widths_and_other_modes_to_their_own():
    from harness.batches import collate
    from harness.speed import batch_widths
    from tests.helpers import compose_run

    graphs = ["trainer.compile=true", "trainer.compile_mode=reduce-overhead"]
    assert batch_widths(compose_run(graphs).trainer, 512) == (512,)  # the default: one graph
    assert batch_widths(compose_run([*graphs, "trainer.graph_widths=4"]).trainer, 512) == (128, 256, 384, 512)
    assert batch_widths(compose_run([*graphs, "trainer.graph_widths=3"]).trainer, 500) == (168, 336, 504)  # multiples of 8
    assert batch_widths(compose_run([*graphs, "trainer.graph_widths=64"]).trainer, 128) == tuple(range(8, 129, 8))
    assert batch_widths(compose_run(["trainer.compile=true"]).trainer, 512) == ()  # no graphs: each batch its own
    widths = batch_widths(compose_run([*graphs, "trainer.graph_widths=4"]).trainer, 512)
    shapes = [collate([{"input_ids": [1] * n, "labels": [1] * n}], 0, widths)["input_ids"].shape[1] for n in (1, 128, 129, 300, 512)]
    assert shapes == [128, 128, 256, 384, 512]


def test_compile_compiles_each_decoder_block_in_place():
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from harness.adapters import lora_config
    from harness.models import load_config
    from harness.schema import AdapterConfig
    from harness.speed import compile_blocks, eager_blocks
    from tests.helpers import compose_run

    model = get_peft_model(AutoModelForCausalLM.from_config(load_config(compose_run(["model=tiny"]).model)),
                           lora_config(AdapterConfig()))
    keys = set(model.state_dict())
    assert compile_blocks(model) == 2  # the tiny model's two LlamaDecoderLayers
    assert set(model.state_dict()) == keys  # saving and export see the plain model
    compiled = [m for m in model.modules() if m._compiled_call_impl is not None]
    assert len(compiled) == 2
    eager_blocks(model, True)  # forward-only passes under CUDA graphs run the blocks eagerly
    assert all(m._compiled_call_impl is None for m in compiled)
    eager_blocks(model, False)
    assert [m for m in model.modules() if m._compiled_call_impl is not None] == compiled
    # One graph for every block, the first too (its input, the frozen embeddings' output, is made
    # to require grad in training as the later blocks' inputs do), and the same gradients.
    from torch._dynamo.utils import counters

    ids = torch.randint(3, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    grads = []
    model.eval()  # no dropout: the compiled blocks draw other masks
    for eager in (True, False):
        eager_blocks(model, eager)
        counters.clear()
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5)


def test_released_blocks_run_eagerly_for_good_with_the_compiled_outputs():
    # After training (harness.speed.release_compiled): no block runs compiled again, not even
    # where eager_blocks had put its compiled forward aside, and the model gives what it gave.
    from peft import get_peft_model
    from torch._dynamo.utils import counters
    from transformers import AutoModelForCausalLM

    from harness.adapters import lora_config
    from harness.models import load_config
    from harness.schema import AdapterConfig
    from harness.speed import compile_blocks, eager_blocks, release_compiled
    from tests.helpers import compose_run

    model = get_peft_model(AutoModelForCausalLM.from_config(load_config(compose_run(["model=tiny"]).model)),
                           lora_config(AdapterConfig())).eval()
    ids = torch.randint(3, 1000, (2, 16), generator=torch.Generator().manual_seed(1))
    torch._dynamo.reset()  # a graph an earlier test compiled in this process would not count
    compile_blocks(model)
    counters.clear()
    with torch.no_grad():
        compiled = model(input_ids=ids, use_cache=False).logits
    assert counters["stats"]["unique_graphs"] == 1
    eager_blocks(model, True)  # as validation leaves them: the compiled forward put aside
    release_compiled(model)
    eager_blocks(model, False)  # nothing to bring back
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in model.modules())
    assert not any("_harness_compiled_call" in m.__dict__ for m in model.modules())
    counters.clear()
    with torch.no_grad():
        eager = model(input_ids=ids, use_cache=False).logits
    assert counters["stats"]["unique_graphs"] == 0  # nothing compiled: it ran eagerly
    torch.testing.assert_close(eager, compiled, atol=1e-5, rtol=1e-5)


def test_own_gradients_copies_each_gradient_into_its_own_memory():
    from harness.speed import own_gradients

    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)
    model(torch.randn(5, 4)).square().sum().backward()
    before = {n: (p.grad.clone(), p.grad.data_ptr()) for n, p in model.named_parameters() if p.grad is not None}
    assert own_gradients(model) == 3  # the frozen weight has no gradient to copy
    for name, param in model.named_parameters():
        if name in before:
            assert param.grad.data_ptr() != before[name][1]
            assert torch.equal(param.grad, before[name][0])
    model(torch.randn(5, 4)).square().sum().backward()  # the next micro-batch adds to the copies
    assert all(not torch.equal(p.grad, before[n][0]) for n, p in model.named_parameters() if n in before)
