"""QLoRA on CPU: nf4 LoRA gradients match an unquantized model holding the same (dequantized)
weights, also after an eval forward under no_grad (the bitsandbytes AVX512-BF16 repack pitfall)."""

from __future__ import annotations

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from harness.adapters import apply_adapter  # noqa: E402
from harness.models import build_model  # noqa: E402
from harness.schema import AdapterConfig, QuantConfig  # noqa: E402
from tests.helpers import compose_run  # noqa: E402


def lora_grads(model, batch) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def dequantized_copy(quantized, reference) -> None:
    """Give ``reference`` exactly the weights the 4-bit model computes with."""
    ref_modules = dict(reference.named_modules())
    for name, module in quantized.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            ref_modules[name].weight.data.copy_(weight.to(ref_modules[name].weight.dtype))


def randomize_lora(model, seed: int) -> None:
    """LoRA B starts at zero (so A gets no gradient); give both the same non-zero values."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in sorted(model.named_parameters()):
        if "lora_" in name:
            param.data.copy_(torch.randn(param.shape, generator=gen) * 0.05)


@pytest.mark.parametrize("mode,double_quant", [("nf4", False), ("nf4", True), ("fp4", False)])
def test_qlora_gradients_match_unquantized_reference(mode, double_quant, tmp_path):
    run = compose_run(["model=tiny", f"quant={mode}", f"quant.double_quant={double_quant}", "trainer.precision=32-true"])
    torch.manual_seed(0)
    quantized = build_model(run.model, run.quant, "32-true", "cpu")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in quantized.modules())
    torch.manual_seed(0)
    reference = build_model(run.model, QuantConfig(mode="none"), "32-true", "cpu")
    reference.load_state_dict({k: v for k, v in quantized.state_dict().items() if k in reference.state_dict()
                               and v.shape == reference.state_dict()[k].shape}, strict=False)
    dequantized_copy(quantized, reference)

    adapter = AdapterConfig(kind="lora", r=4, alpha=8, dropout=0.0, targets="all_linear")
    quantized, reference = apply_adapter(quantized, adapter), apply_adapter(reference, adapter)
    randomize_lora(quantized, 1)
    randomize_lora(reference, 1)

    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 1000, (2, 24), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    # An inference forward first: on AVX512-BF16 CPUs this used to repack 4-bit weights.
    quantized.eval()
    with torch.no_grad():
        quantized(**batch)
    quantized.train(), reference.train()

    got, want = lora_grads(quantized, batch), lora_grads(reference, batch)
    assert got.keys() == want.keys() and len(got) == 2 * 7 * 2  # A and B, 7 targets, 2 layers
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-3, atol=1e-5), name
    assert any(g.abs().sum() > 0 for n, g in got.items() if "lora_A" in n)
