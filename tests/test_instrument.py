"""What the findings rest on: full fine-tuning that trains, QLoRA scored like the study
(merged into the 16-bit base), and memory measured per phase."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from harness.estimate import estimate_run, resolve_precision
from harness.models import build_model
from tests.helpers import compose_run, tiny, train_in_process


def test_auto_precision_keeps_fp32_master_weights_for_full_fine_tuning():
    # Where bf16 is native (a GPU with bf16): adapters in bf16 weights, full fine-tuning in
    # bf16 compute over fp32 weights. An explicit choice is kept.
    if not torch.cuda.is_available():
        assert resolve_precision("auto", "cuda", "lora") == "bf16-true"
        assert resolve_precision("auto", "cuda", "full") == "bf16-mixed"
    assert resolve_precision("bf16-true", "cuda", "full") == "bf16-true"
    assert resolve_precision("32-true", "cpu", "full") == "32-true"


def test_estimate_follows_full_fine_tuning_precision():
    lora = estimate_run(compose_run(["model=llama2_7b", "model.init=random"]), device="cuda")
    full = estimate_run(compose_run(["model=llama2_7b", "model.init=random", "adapter=full"]), device="cuda")
    assert lora["precision"] == "bf16-true" and full["precision"] == "bf16-mixed"
    n = full["trainable_params"]
    parts = full["memory_estimate"]
    # fp32 master weights, fp32 gradients, two fp32 Adam states per parameter.
    assert parts["weights_bytes"] == 4 * n
    assert parts["gradients_bytes"] == 4 * n and parts["optimizer_state_bytes"] == 8 * n


def changed_share(run_dir, record, precision: str) -> float:
    """Share of matrix weights the run changed, against the same random init rebuilt."""
    import lightning as L

    run = compose_run(record["overrides"])
    L.seed_everything(run.seed, verbose=False)
    initial = build_model(run.model, run.quant, precision, "cpu").state_dict()
    trained = load_file(str(run_dir / "model" / "model.safetensors"))
    changed = total = 0
    for name, weight in trained.items():
        if weight.dim() == 2 and name in initial:
            changed += (weight.float() != initial[name].float()).sum().item()
            total += weight.numel()
    return changed / total


@pytest.mark.parametrize("precision,moved", [("bf16-mixed", True), ("bf16-true", False)])
def test_full_fine_tuning_weights_move_only_with_fp32_master_weights(chat_file, tmp_path, precision, moved):
    # lr 2e-5 with Adam moves every weight by about 2e-5 per step: far below half a bf16 step
    # of the random init's weights (std 0.02: bf16 step about 1e-4), so bf16 weights keep
    # almost none of the updates while fp32 master weights keep them all.
    overrides = tiny(chat_file, "adapter=full", "optimizer.lr=2e-5", "scheduler=constant",
                     "scheduler.warmup_steps=0", f"trainer.precision={precision}")
    record = train_in_process(overrides, tmp_path)
    assert record["status"] == "ok" and record["precision"] == precision
    record["overrides"] = overrides
    share = changed_share(tmp_path, record, precision)
    if moved:
        assert share > 0.99, share
    else:
        assert share < 0.5, share


def test_cpu_run_records_the_training_phase_peak(chat_file, tmp_path):
    record = train_in_process(tiny(chat_file), tmp_path)
    assert record["status"] == "ok"
    assert record["train_peak_memory_kind"] == "host_rss_process_so_far"
    assert 0 < record["train_peak_memory_gib"] <= record["peak_memory_gib"]


def test_qlora_is_scored_merged_into_the_16bit_base_like_the_study(chat_file, tmp_path, tiny_pretrained):
    from harness import evaluate
    from harness.export import export_merged

    pytest.importorskip("bitsandbytes")
    overrides = tiny(chat_file, "quant=nf4", "trainer.precision=32-true", "optimizer.lr=0.01", "eval=custom",
                     "eval.tasks=[harness_heldout]", base=tiny_pretrained)
    record = train_in_process(overrides, tmp_path)
    assert record["status"] == "ok", record.get("error")
    assert record["eval_protocol"] == "merged_16bit"
    nll = lambda scores: scores["harness_heldout"]["token_nll"]["value"]  # noqa: E731
    # Two bases: the 4-bit one the adapter trained on, and the 16-bit one the study merged into.
    assert nll(record["eval_base_quantized"]) != pytest.approx(nll(record["eval_base"]), abs=1e-6)
    assert record["eval_delta"]["harness_heldout"]["token_nll"] == pytest.approx(
        nll(record["eval"]) - nll(record["eval_base"]))
    assert record["eval_quantized_delta"]["harness_heldout"]["token_nll"] == pytest.approx(
        nll(record["eval_quantized"]) - nll(record["eval_base_quantized"]))
    # ``eval`` is what the exported merged folder scores.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = export_merged(tmp_path)
    scores = evaluate.score(AutoModelForCausalLM.from_pretrained(merged), AutoTokenizer.from_pretrained(merged),
                            ["harness_heldout"], device="cpu", heldout_path=tmp_path / evaluate.HELDOUT_FILE)
    assert nll(scores) == pytest.approx(nll(record["eval"]), abs=1e-4)


def test_quantized_context_false_scores_only_the_merged_model(chat_file, tmp_path, tiny_pretrained):
    pytest.importorskip("bitsandbytes")
    overrides = tiny(chat_file, "quant=nf4", "trainer.precision=32-true", "optimizer.lr=0.01", "eval=custom",
                     "eval.tasks=[harness_heldout]", base=tiny_pretrained)
    both = train_in_process(overrides, tmp_path / "both")
    merged_only = train_in_process([*overrides, "eval.quantized_context=false"], tmp_path / "merged")
    assert both["status"] == merged_only["status"] == "ok", merged_only.get("error")
    assert merged_only["eval_protocol"] == "merged_16bit"
    for key in ("eval_quantized", "eval_base_quantized", "eval_quantized_delta"):
        assert key in both and key not in merged_only, key
    # The study's scores are the same either way (the context scoring changes no RNG of training).
    for key in ("eval", "eval_base", "eval_delta"):
        assert merged_only[key] == both[key], key
    assert merged_only["train_losses"] == both["train_losses"]
    # Which models are scored is no part of the base scores' cache key: the cache keeps serving.
    from harness.scoring import base_cache_key
    from tests.helpers import compose_run

    keys = {base_cache_key(compose_run([*overrides, f"eval.quantized_context={v}"]), "32-true", "cpu")[0]
            for v in ("true", "false")}
    assert len(keys) == 1


def test_unquantized_runs_are_scored_in_process(chat_file, tmp_path):
    record = train_in_process(tiny(chat_file, "eval=custom", "eval.tasks=[harness_heldout]", "eval.limit=4"), tmp_path)
    assert record["status"] == "ok"
    assert record["eval_protocol"] == "in_process" and "eval_quantized" not in record
