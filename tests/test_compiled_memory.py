"""The dry-run estimate of compiled blocks (``trainer.compile``): what inductor's partition keeps
for backward, traced on the meta device (:mod:`harness.compiled_memory`).

The trace is checked against a real compiled block on CPU (the same partitioner and
decompositions, with AOTAutograd's eager backend: its saved tensors are the ones inductor's
code would keep), and the estimate against the compiled GPU peaks measured on an H200
(docs/benchmarks.md).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness import compiled_memory, speed
from harness.adapters import apply_adapter, counting_config
from harness.estimate import estimate_run
from harness.models import decoder_blocks, load_config
from tests.helpers import compose_run

TINY = ["model=tiny", "trainer.compile=true", "trainer.precision=bf16-true", "data.max_seq_len=32",
        "trainer.micro_batch_size=2"]


def _model(run, device: str) -> torch.nn.Module:
    """The run's tiny model with its adapter, in bf16 and training mode, as training builds it."""
    with torch.device(device):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(load_config(run.model), dtype=torch.bfloat16)
        model = apply_adapter(model, counting_config(run.adapter), False)
    model.to(torch.bfloat16)
    if run.trainer.recompute_lora_dropout:
        speed.recompute_lora_dropout(model)
    return model.train()


def _saved_by_a_compiled_block(model: torch.nn.Module, batch: int, length: int) -> int:
    """Bytes the first block's compiled forward saves for backward in a real forward on CPU, with
    a padding mask: its tensors less the weights, the mask and the rotary tables."""
    block = decoder_blocks(model)[0]
    outputs = []
    block.register_forward_hook(lambda module, args, out: outputs.append(out[0] if isinstance(out, tuple) else out))
    block.forward = torch.compile(block.forward, backend="aot_eager_decomp_partition", fullgraph=True)
    mask = torch.ones(batch, 1, length, length, dtype=torch.bool).tril()
    mask[-1, :, :, length // 2:] = False  # the last row is padded
    embeds = torch.randn(batch, length, model.config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
    node = outputs[0].grad_fn
    assert type(node).__name__ == "CompiledFunctionBackward"
    weights = {p.data_ptr() for p in model.parameters()}
    kept = [t for t in node.saved_tensors
            if t.data_ptr() not in weights and t is not mask and not (t.dim() == 3 and t.shape[0] == 1)]
    return sum(t.numel() * t.element_size() for t in kept)


def _head_bytes_per_token(run) -> int:
    """The estimate's head count (not compiled): the final norm's input and the logits in bf16
    and fp32; the full fine-tune's norm output besides."""
    config = load_config(run.model)
    return config.hidden_size * 2 * (2 if run.adapter.kind == "full" else 1) + config.vocab_size * 6


@pytest.mark.parametrize("overrides", [
    ["adapter.targets=all_linear", "trainer.recompute_lora_dropout=true"],
    ["adapter.targets=all_linear"],  # peft's dropout: its masks and dropped copies are kept
    ["adapter.targets=all_linear", "adapter.dropout=0"],
    ["adapter.targets=qv", "trainer.recompute_lora_dropout=true"],
    ["adapter=full"],
])
def test_the_trace_keeps_what_a_compiled_block_keeps(overrides):
    run = compose_run([*TINY, *overrides])
    meta = _model(run, "meta")
    traced = compiled_memory.saved_bytes(meta, run, device="cpu")
    assert "forward" not in decoder_blocks(meta)[0].__dict__  # the traced block's own forward is back
    assert traced == _saved_by_a_compiled_block(_model(run, "cpu"), 2, 32)
    compiled = estimate_run(run, "cpu")["memory_estimate"]
    assert compiled["activations_bytes"] == 2 * traced + 2 * 32 * _head_bytes_per_token(run)
    assert any("traced" in note for note in compiled["assumptions"])


def test_a_block_dynamo_splits_is_counted_as_eager():
    """peft's DoRA layer breaks dynamo's graph: the block is several partitions, which one trace
    does not see, so the estimate keeps the eager count and says so."""
    run = compose_run([*TINY, "adapter=dora", "adapter.targets=qv"])
    assert compiled_memory.saved_bytes(_model(run, "meta"), run, device="cpu") is None
    compiled = estimate_run(run, "cpu")["memory_estimate"]
    eager = estimate_run(compose_run([*TINY, "adapter=dora", "adapter.targets=qv", "trainer.compile=false"]), "cpu")
    assert compiled["activations_bytes"] == eager["memory_estimate"]["activations_bytes"]
    assert any("counted as eager (the trace failed)" in note for note in compiled["assumptions"])


def test_blocks_that_are_not_compiled_or_not_traceable_are_not_traced():
    assert compiled_memory.not_traced_reason(compose_run(["model=tiny"])) == "blocks not compiled"
    reasons = {o: compiled_memory.not_traced_reason(compose_run([*TINY, o]))
               for o in ("quant=int8", "trainer.gradient_checkpointing=true", "trainer.precision=bf16-mixed")}
    assert all(reasons.values()), reasons
    assert compiled_memory.not_traced_reason(compose_run([*TINY, "quant=nf4"])) is None


# Compiled GPU peaks measured on an H200 (docs/benchmarks.md, "Fourth run", 2026-11-24):
# `python -m harness.bench --configs 7b_lora_all 7b_qlora_all --steps 20`, the harness path with
# its default switches (regional compile, recomputed LoRA dropout), micro-batch 4 x 512 tokens.
# The eager count was 1.17x and 1.31x these.
COMPILED_7B = ["model=llama2_7b", "model.init=random", "trainer.precision=bf16-true", "trainer.micro_batch_size=4",
               "data.max_seq_len=512", "adapter.targets=all_linear", "trainer.compile=true",
               "trainer.recompute_lora_dropout=true"]


@pytest.mark.parametrize(("quant", "measured_gib"), [("quant=none", 19.25), ("quant=nf4", 10.54)])
def test_compiled_estimates_meet_the_measured_compiled_peaks(quant, measured_gib):
    estimate = estimate_run(compose_run([*COMPILED_7B, quant]), "cuda")["memory_estimate"]["total_gib"]
    assert measured_gib <= estimate <= 1.02 * measured_gib


def test_a_compiled_packs_estimate_stays_above_its_measured_peak():
    """Pack sizing sums the trials' estimates (:func:`sweeps.packed.pack_chunks`), so a traced
    count below what a compiled pack keeps would pack more trials than the GPU holds. One pack of
    three compiled trials (CUDA graphs; ranks 2, 8, 64 at one seed) measured on an H100
    (docs/benchmarks.md, 2026-12-05): 8.25 GiB allocated at most in training; the eager count
    planned 9.83 GiB (1.19x), the trace plans about 1.12x."""
    import json
    import tarfile

    from harness.paths import REPO_ROOT
    from sweeps.packed import PackEntry, pack_chunks
    from tests.test_estimate import _run_of

    archive = REPO_ROOT / "docs" / "findings" / "experiments" / "ab_packed_graphs_h100_2026-12-05.tgz"
    with tarfile.open(archive) as tar:
        records = [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith("record.json")]
    pack = [r for r in records if r["pack_log"] == records[0]["pack_log"]]
    assert len(pack) == pack[0]["pack_size"] == 3 and pack[0]["config"]["trainer"]["compile"]
    entries = [PackEntry(None, {}, None, [], REPO_ROOT, estimate=estimate_run(_run_of(r["config"]), "cuda")["memory_estimate"])
               for r in pack]
    assert all(any("traced" in note for note in e.estimate["assumptions"]) for e in entries)
    (chunk,) = pack_chunks(entries, 3, budget_gib=80)
    measured = pack[0]["train_peak_gpu_allocated_gib"]
    assert measured <= chunk[0].pack_estimate_gib <= 1.15 * measured


def test_runs_that_differ_only_in_what_the_trace_ignores_trace_once(monkeypatch):
    """A sweep's driver estimates every run; a trace takes seconds, so runs differing in learning
    rate, alpha or seed reuse one trace, and a run of another rank traces its own."""
    import harness.estimate as estimate

    traces = []
    real = compiled_memory.saved_bytes
    monkeypatch.setattr(compiled_memory, "saved_bytes", lambda *a, **k: traces.append(1) or real(*a, **k))
    monkeypatch.setattr(estimate, "_TRACED", {})
    runs = [[*TINY, "adapter.targets=all_linear", *o] for o in
            ([], ["optimizer.lr=1e-3", "adapter.alpha=64", "seed=7"], ["adapter.r=16"])]
    totals = [estimate_run(compose_run(o), "cpu")["memory_estimate"]["activations_bytes"] for o in runs]
    assert len(traces) == 2
    assert totals[0] == totals[1] < totals[2]
