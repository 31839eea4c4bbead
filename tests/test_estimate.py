"""Dry-run estimate: exact parameter counts (F6/F7) and the memory budget's shape (F3, F12).

Every estimate builds the model on the meta device, so the 7B shape costs well under a second.
"""

from __future__ import annotations

import json

import pytest
import torch

from harness.estimate import cpu_has_native_bf16, estimate_run, resolve_precision
from harness.schema import ConfigError
from tests.helpers import compose_run

LLAMA_7B = ["model=llama2_7b", "model.init=random", "trainer.precision=bf16-true",
            "trainer.micro_batch_size=1", "trainer.global_batch_size=1", "data.max_seq_len=512"]
R256 = ["adapter.targets=all", "adapter.r=256", "adapter.alpha=512"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # The 7B preset's arch is used offline; never wait on the hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def estimate(*overrides: str) -> dict:
    return estimate_run(compose_run(list(overrides)), device="cpu")


def memory(*overrides: str) -> dict:
    return estimate(*overrides)["memory_estimate"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["adapter.targets=qv", "adapter.r=8"], 4_194_304),  # F6: q,v r=8
        (["adapter.targets=all", "adapter.r=8"], 20_277_248),  # F6: all layers incl. lm_head
        (R256, 648_871_936),  # F7: all layers r=256
    ],
)
def test_trainable_params_match_the_reference_study(overrides, expected):
    est = estimate(*LLAMA_7B, *overrides)
    assert est["trainable_params"] == expected
    assert est["total_params"] == 6_738_415_616 + expected
    json.dumps(est)  # JSON-able as printed by dry_run
    mem = est["memory_estimate"]
    parts = ("weights_bytes", "adapter_bytes", "gradients_bytes", "optimizer_state_bytes", "activations_bytes",
             "loss_backward_bytes", "autocast_copies_bytes", "adapter_autocast_copies_bytes", "gathered_blocks_bytes")
    assert mem["total_bytes"] == sum(mem[p] for p in parts)
    assert mem["total_gb"] == pytest.approx(mem["total_bytes"] / 1e9, abs=1e-3)
    assert mem["assumptions"] and all(isinstance(a, str) for a in mem["assumptions"])


def test_nf4_weights_are_about_a_quarter_of_bf16():
    bf16 = memory(*LLAMA_7B)["weights_bytes"]
    nf4 = memory(*LLAMA_7B, "quant=nf4")["weights_bytes"]
    int8 = memory(*LLAMA_7B, "quant=int8")["weights_bytes"]
    assert bf16 == 2 * 6_738_415_616
    # 0.5 byte + absmax per linear weight; embeddings and lm_head stay bf16.
    assert 0.25 < nf4 / bf16 < 0.35
    assert nf4 < int8 < bf16


def test_double_quant_is_smaller():
    plain = memory(*LLAMA_7B, "quant=nf4")["weights_bytes"]
    double = memory(*LLAMA_7B, "quant=nf4", "quant.double_quant=true")["weights_bytes"]
    assert double < plain
    assert memory(*LLAMA_7B, "quant=fp4")["weights_bytes"] == plain


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
def test_adamw_vs_sgd_memory_matters_only_at_large_rank(precision):
    # F3 (QLoRA runs): 14.18 vs 14.15 GB at r=8 (+0.2%), 17.86 vs 14.46 GB at r=256 (+23.5%).
    # Gap = AdamW's extra memory over SGD's total. bf16-true keeps the states in bf16 (about
    # +10.6% at r=256); bf16-mixed keeps the LoRA weights and states in fp32 (about +15.6%).
    def relative_gap(*overrides):
        common = (*LLAMA_7B, f"trainer.precision={precision}", "quant=nf4", *overrides)
        adamw = memory(*common, "optimizer=adamw")["total_bytes"]
        sgd = memory(*common, "optimizer=sgd")["total_bytes"]
        assert adamw > sgd
        return (adamw - sgd) / sgd

    assert relative_gap("adapter.r=8") < 0.01
    assert relative_gap(*R256) > 0.10


def test_activations_scale_with_micro_batch_and_shrink_with_checkpointing():
    one = memory(*LLAMA_7B)["activations_bytes"]
    two = memory(*LLAMA_7B, "trainer.micro_batch_size=2", "trainer.global_batch_size=2")["activations_bytes"]
    longer = memory(*LLAMA_7B, "data.max_seq_len=1024")["activations_bytes"]
    checkpointed = memory(*LLAMA_7B, "trainer.gradient_checkpointing=true")["activations_bytes"]
    assert two == 2 * one
    assert longer == 2 * one  # SDPA stores no s x s scores: linear in sequence length too
    assert checkpointed < one / 4
    no_dropout = memory(*LLAMA_7B, "adapter.dropout=0")["activations_bytes"]
    assert no_dropout < one


def test_autocast_copies_and_qdora_dequantized_weights():
    """bf16-mixed keeps a bf16 copy of each Linear weight for backward (with gradient
    checkpointing: the head's and one layer's); QDoRA with dropout keeps each dequantized weight."""
    per_layer = 4 * 4096 * 4096 + 3 * 4096 * 11008  # q, k, v, o; gate, up, down
    head = 4096 * 32000
    mixed = memory(*LLAMA_7B, "trainer.precision=bf16-mixed")
    assert mixed["autocast_copies_bytes"] == 2 * (32 * per_layer + head)
    assert mixed["adapter_autocast_copies_bytes"] == 2 * 4_194_304  # q,v r=8
    checkpointed = memory(*LLAMA_7B, "trainer.precision=bf16-mixed", "trainer.gradient_checkpointing=true")
    assert checkpointed["autocast_copies_bytes"] == 2 * (per_layer + head)
    assert checkpointed["adapter_autocast_copies_bytes"] == 2 * 4_194_304  # cached: they train
    assert memory(*LLAMA_7B)["autocast_copies_bytes"] == 0
    assert memory(*LLAMA_7B, "trainer.precision=bf16-mixed", "quant=nf4")["autocast_copies_bytes"] == 2 * head
    # DoRA with dropout keeps a copy of each weight it recomputes the base output from where that
    # weight is quantized (dequantized) or fp32 under bf16-mixed (autocast's cast); not in bf16-true.
    dora = ("adapter=dora", "adapter.targets=all_linear")
    for base in (("quant=nf4",), ("trainer.precision=bf16-mixed",)):
        dropped = memory(*LLAMA_7B, *dora, *base)["activations_bytes"]
        kept = memory(*LLAMA_7B, *dora, *base, "adapter.dropout=0")["activations_bytes"]
        assert dropped - kept >= 32 * per_layer * 2, base  # bf16 weight copies, besides the dropout copies
    plain = memory(*LLAMA_7B, *dora)["activations_bytes"] - memory(*LLAMA_7B, *dora, "adapter.dropout=0")["activations_bytes"]
    assert plain < 32 * per_layer


def test_full_finetuning_costs_about_16_bytes_per_param():
    est = estimate(*LLAMA_7B, "adapter=full", "trainer.precision=bf16-mixed", "optimizer=adamw")
    mem = est["memory_estimate"]
    assert est["trainable_params"] == est["total_params"] == 6_738_415_616
    assert mem["adapter_bytes"] == 0  # the trained weights are the weights, counted once
    per_param = (mem["total_bytes"] - mem["activations_bytes"]) / est["total_params"]
    assert 14 <= per_param <= 20


def test_sharding_splits_the_full_finetuning_state_over_the_devices():
    one = memory(*LLAMA_7B, "adapter=full", "trainer.devices=2", "trainer.global_batch_size=2", "trainer.strategy=ddp")
    two = memory(*LLAMA_7B, "adapter=full", "trainer.devices=2", "trainer.global_batch_size=2", "trainer.strategy=fsdp")
    for part in ("weights_bytes", "gradients_bytes", "optimizer_state_bytes"):
        assert two[part] == one[part] // 2
    assert two["activations_bytes"] == one["activations_bytes"] and one["gathered_blocks_bytes"] == 0
    # Three copies of one of the 32 blocks' 202M bf16 weights: gathered, prefetched, its gradients.
    assert two["gathered_blocks_bytes"] == 3 * 2 * 202_383_360
    assert any("fsdp" in note for note in two["assumptions"])


def test_tied_embeddings_count_once_and_sgd_without_momentum_keeps_no_state():
    est = estimate("model=tiny", "trainer.precision=32-true", "optimizer=sgd", "optimizer.momentum=0")
    mem = est["memory_estimate"]
    assert mem["weights_bytes"] == 4 * (est["total_params"] - est["trainable_params"])
    assert mem["adapter_bytes"] == mem["gradients_bytes"] == 4 * est["trainable_params"]
    assert mem["optimizer_state_bytes"] == 0


def test_unknown_target_is_a_config_error():
    with pytest.raises(ConfigError, match="adapter.targets"):
        estimate("model=tiny", "adapter.targets=[nope_proj]")


def test_resolve_precision():
    cpu_auto = "bf16-true" if cpu_has_native_bf16() else "32-true"
    assert resolve_precision("auto", "cpu") == cpu_auto
    assert resolve_precision("bf16-mixed", "cuda") == "bf16-mixed"
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"
    if not torch.cuda.is_available() or torch.cuda.is_bf16_supported():
        assert resolve_precision("auto", "cuda") == "bf16-true"
    # An estimate states the precision it resolved.
    assert estimate("model=tiny", "trainer.precision=auto")["precision"] == cpu_auto


# -- against the GPU: every measured peak in the committed records ---------------------------------

def _measured_shapes() -> dict[str, tuple]:
    """Each distinct shape of the committed GPU records trained alone (a packed run's peak is its
    pack's): its config, its largest measured training peak (allocated), and where it came from."""
    import tarfile

    from harness.paths import REPO_ROOT

    shapes: dict[str, tuple] = {}
    for archive in sorted((REPO_ROOT / "docs" / "findings" / "records").glob("*.tgz")):
        with tarfile.open(archive) as tar:
            for member in tar:
                if not member.name.endswith("record.json"):
                    continue
                record = json.loads(tar.extractfile(member).read())
                peak = record.get("train_peak_gpu_allocated_gib")
                if not peak or record.get("packed"):
                    continue
                config = record["config"]
                # What memory depends on (learning rates, schedules and seeds do not change it).
                trainer = {k: config["trainer"].get(k) for k in ("precision", "micro_batch_size", "gradient_checkpointing",
                                                                  "liger_kernels", "compile", "recompute_lora_dropout",
                                                                  "devices", "strategy")}
                adapter = {k: config["adapter"].get(k) for k in ("kind", "r", "targets", "target_modules", "dropout")}
                optimizer = {k: config["optimizer"].get(k) for k in ("name", "target", "states", "state_bytes", "momentum")}
                key = json.dumps({"model": config["model"], "quant": config["quant"], "adapter": adapter,
                                  "trainer": trainer, "optimizer": optimizer, "seq": config["data"]["max_seq_len"]},
                                 sort_keys=True, default=str)
                old = shapes.get(key)
                shapes[key] = (config, max(peak, old[1]) if old else peak, f"{archive.stem}/{member.name}")
    return shapes


def _run_of(config: dict):
    """The typed config of a record (:func:`harness.export.run_config_from_record`); records older
    than the optimizer's ``target`` get their optimizer group's other keys."""
    from harness.compose import compose
    from harness.export import run_config_from_record

    if "target" not in config["optimizer"]:
        resolved = compose([f"optimizer={config['optimizer']['name']}"])[1]
        config = {**config, "optimizer": {**resolved["optimizer"], **config["optimizer"]}}
    return run_config_from_record({"config": config})


def test_the_estimate_is_within_5_percent_of_every_measured_gpu_peak():
    """Issue 18's goal on the peaks the H200 measured (docs/findings/records): LoRA, DoRA, full
    fine-tuning in bf16-true and bf16-mixed, nf4, fp4, int8, ranks 2-256, targets qv to all, the
    135M and 7B shapes. The estimate's terms for int8, DoRA, autocast and the loss's backward
    came from these misses (2026-12-04: the records' own estimates were 15% under on the 7B int8
    run and 20-37% under on every 135M shape; today's are all within 2.8%)."""
    shapes = _measured_shapes()
    assert len(shapes) >= 12  # 38 on 2026-12-04: 29 shapes, some in records of two schema versions
    misses = []
    for config, peak, source in shapes.values():
        estimate = estimate_run(_run_of(config), "cuda")["memory_estimate"]["total_gib"]
        if abs(estimate - peak) > 0.05 * peak:
            misses.append(f"{source}: estimate {estimate} GiB, measured {peak} GiB")
    assert not misses, misses
