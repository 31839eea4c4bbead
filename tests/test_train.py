"""End-to-end runs on the tiny model: records, adapters, export, learning, failure statuses."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.record import RECORD_NAME
from tests.helpers import compose_run, read_record, run_cli, tiny, train_in_process

MEASUREMENTS = ["trainable_params", "total_params", "peak_rss_bytes", "train_seconds", "total_seconds",
                "tokens_per_s", "train_loss_first", "train_loss_last", "train_loss_best", "val_loss_first",
                "val_loss_last", "val_loss_best", "versions", "git_sha", "device", "seed", "adapter_path", "config"]


# One CLI run on one process and one DDP run over two, each read by several tests below (merged
# runs: they were the same configuration run again); the tests that read them share a worker.
CPU_RUN = ("trainer.accelerator=cpu", "adapter.dropout=0")


@pytest.fixture(scope="module")
def single_run(chat_file, tmp_path_factory):
    """The tiny run through ``python -m harness.run`` on one CPU process, with the CSV logger."""
    run_dir = tmp_path_factory.mktemp("single") / "run"
    return run_cli(tiny(chat_file, *CPU_RUN, "logger=csv"), run_dir), run_dir


@pytest.fixture(scope="module")
def ddp_run(chat_file, tmp_path_factory):
    """The same run (no logger) with DDP over two CPU processes."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    return run_cli(tiny(chat_file, *CPU_RUN, "trainer.devices=2", "trainer.strategy=ddp"), run_dir), run_dir


@pytest.mark.xdist_group("train_cli_runs")
def test_cli_run_writes_a_complete_record_in_the_hydra_run_dir(single_run):
    result, run_dir = single_run
    assert result.returncode == 0, result.stderr[-2000:]
    record = read_record(run_dir)
    assert record["status"] == "ok"
    for key in MEASUREMENTS:
        assert key in record and record[key] is not None, key
    assert record["config"]["model"]["name"] == "tiny" and record["seed"] == 42
    assert record["optimizer_steps"] == 3 and len(record["train_losses"]) == 3
    assert record["data"]["n_train"] == 32 and record["data"]["n_val"] == 8
    assert record["train_tokens_seen"] > 0 and record["tokens_per_s"] > 0
    # Where the time went: start-up (imports) before the run's clock, then set-up, then training.
    assert record["startup_seconds"] > 0.5  # a fresh process imports torch before it gets here
    assert 0 < record["setup_seconds"] < record["total_seconds"]
    assert record["setup_seconds"] + record["train_seconds"] <= record["total_seconds"]
    assert 0 < record["trainable_params"] < record["total_params"]
    assert (run_dir / "logs" / "metrics.csv").is_file()
    # The adapter is in PEFT format.
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(record["adapter_path"]).r == 8


def test_training_lowers_the_loss(chat_file, tmp_path):
    record = train_in_process(tiny(chat_file, "trainer.max_steps=16", "optimizer.lr=0.03", "adapter.targets=all",
                                   "adapter.r=16", "scheduler=constant", "scheduler.warmup_steps=0"), tmp_path)
    assert record["status"] == "ok"
    assert record["train_loss_last"] < record["train_loss_first"] - 0.5
    assert record["val_loss_last"] < record["val_loss_first"]


@pytest.mark.parametrize("extra,trainable", [
    (["adapter=dora"], None),
    (["adapter.targets=all", "adapter.rslora=true"], None),
    (["adapter=full"], "all"),
    (["optimizer=sgd", "scheduler=linear"], None),
    (["optimizer=adamw_8bit"], None),
    (["optimizer=paged_adamw_8bit", "quant=nf4", "quant.double_quant=true"], None),
    (["optimizer=lion_8bit", "quant=int8"], None),
    (["optimizer.name=adam", "optimizer.target=torch.optim.Adam"], None),  # an optimizer needs no code
    (["+optimizer.lr_ratios.lora_B=16", "trainer.gradient_checkpointing=true"], None),
    (["data.packing=true", "trainer.precision=bf16-true"], None),
])
def test_variants_train(chat_file, tmp_path, extra, trainable):
    record = train_in_process(tiny(chat_file, *extra), tmp_path)
    assert record["status"] == "ok", record.get("error")
    assert math.isfinite(record["train_loss_last"])
    if trainable == "all":
        assert record["trainable_params"] == record["total_params"]
        assert record["model_path"] and record["adapter_path"] is None


@pytest.mark.parametrize("option,cls_name,expected", [
    ("adamw", "AdamW", {"lr": 3e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}),
    ("sgd", "SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}),
    ("lion_8bit", "Lion8bit", {"lr": 3e-5, "betas": (0.9, 0.99), "weight_decay": 0.1}),
    ("paged_adamw_8bit", "PagedAdamW8bit", {"lr": 3e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}),
])
def test_each_optimizer_option_builds_its_class_with_its_hyperparameters(option, cls_name, expected):
    from torch import nn

    from harness.module import build_optimizer

    optimizer = build_optimizer(nn.Linear(4, 4), compose_run([f"optimizer={option}"]).optimizer)
    assert type(optimizer).__name__ == cls_name
    assert {key: optimizer.defaults[key] for key in expected} == expected


def _cosine(step: int, warmup: int = 2, total: int = 8) -> float:
    return step / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.mark.parametrize("option,expected", [
    ("scheduler=cosine", [_cosine(s) for s in range(8)]),
    ("scheduler=linear", [0.0, 0.5] + [(8 - s) / 6 for s in range(2, 8)]),
    ("scheduler=constant", [0.0, 0.5] + [1.0] * 6),
    ("scheduler.type=inverse_sqrt", [0.0, 0.5] + [math.sqrt(2 / s) for s in range(2, 8)]),  # a schedule with no YAML
])
def test_each_scheduler_option_gives_its_learning_rates(option, expected):
    import torch
    from torch import nn

    from harness.module import build_scheduler

    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, compose_run([option, "scheduler.warmup_steps=2"]).scheduler, total_steps=8)
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx(expected, abs=1e-6)


def test_lora_plus_groups_have_the_ratio(chat_file):
    from harness.adapters import apply_adapter
    from harness.models import build_model
    from harness.module import build_optimizer

    run = compose_run(tiny(chat_file, "+optimizer.lr_ratios.lora_B=16"))
    model = apply_adapter(build_model(run.model, run.quant, "32-true", "cpu"), run.adapter)
    optimizer = build_optimizer(model, run.optimizer)
    by_lr = {g["lr"]: g["params"] for g in optimizer.param_groups}
    assert sorted(by_lr) == pytest.approx([run.optimizer.lr, 16 * run.optimizer.lr])
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("lora_B" in names[id(p)] for p in by_lr[max(by_lr)])
    assert all("lora_A" in names[id(p)] for p in by_lr[min(by_lr)])


def test_cosine_schedule_is_half_a_cycle_over_the_run():
    from harness.module import build_scheduler
    from harness.schema import SchedulerConfig

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = build_scheduler(optimizer, SchedulerConfig(name="cosine", warmup_steps=2), total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0 and lrs[2] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.5)  # halfway through the decay
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))


def test_nan_loss_is_recorded_as_diverged(chat_file, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(tiny(chat_file, "optimizer.lr=1e10", "trainer.max_grad_norm=null",
                          "trainer.max_steps=6", "adapter.targets=all_linear"), run_dir)
    record = read_record(run_dir)
    assert record["status"] == "diverged", record.get("error")
    assert result.returncode == 1
    assert record["optimizer_steps"] < 6


def test_export_merges_into_a_plain_hf_folder_with_the_same_outputs(chat_file, tmp_path):
    import lightning as L
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from harness.models import build_model

    run_dir = tmp_path / "run"
    record = train_in_process(tiny(chat_file, "adapter.targets=all_linear", "optimizer.lr=0.01"), run_dir)
    assert record["status"] == "ok"
    result = subprocess.run([sys.executable, "-m", "harness.export", str(run_dir)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    merged_dir = run_dir / "merged"
    assert (merged_dir / "config.json").is_file() and (merged_dir / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    run = compose_run(tiny(chat_file))
    L.seed_everything(run.seed, verbose=False)
    tuned = PeftModel.from_pretrained(build_model(run.model, run.quant, "32-true", "cpu"), record["adapter_path"])
    ids = torch.randint(3, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = tuned.eval()(input_ids=ids).logits, merged.eval()(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_export_refuses_a_dir_without_a_record(tmp_path):
    result = subprocess.run([sys.executable, "-m", "harness.export", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path}: not a run dir (no {RECORD_NAME})"]


@pytest.mark.slow
def test_embedded_model_few_steps(tmp_path):
    """The real SmolLM2-135M-Instruct from the PyPI GGUF, on the real embedded ShareGPT data."""
    run_dir = tmp_path / "run"
    result = run_cli(["trainer.max_steps=2", "trainer.micro_batch_size=2", "trainer.global_batch_size=2",
                      "data.max_seq_len=256", "data.val_size=4", "logger=none", "eval.limit=10"], run_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    record = read_record(run_dir)
    assert record["status"] == "ok"
    assert record["total_params"] == 134_515_008 + record["trainable_params"]
    assert record["data"]["records_recovered"] == 17_671
    # A pretrained instruct model already predicts chat responses well; a random one would sit near ln(49152) = 10.8.
    assert record["val_loss_first"] < 3.0
    # On CPU eval=local is sized to the held-out task and the three probes (eval.cpu_tasks).
    assert record["eval"]["harness_add1d"]["acc"]["value"] is not None and "eval_delta" in record


def test_sophia_trains_when_installed(chat_file, tmp_path):
    pytest.importorskip("sophia_opt")
    record = train_in_process(tiny(chat_file, "optimizer=sophia", "trainer.max_steps=11"), tmp_path)
    assert record["status"] == "ok", record.get("error")
    assert record["optimizer_steps"] == 11 and math.isfinite(record["train_loss_last"])


@pytest.mark.xdist_group("train_cli_runs")
def test_two_processes_share_each_global_batch_and_rank_zero_reports(single_run, ddp_run):
    # DDP over two CPU processes (gloo): each device trains on half of every global batch; the
    # record, written once, holds each device's peak memory and tokens.
    (single, single_dir), (double, double_dir) = single_run, ddp_run
    assert single.returncode == 0 and double.returncode == 0, double.stderr[-3000:]
    assert double.stdout.count('"status"') == 1  # one summary, from rank 0
    one, two = read_record(single_dir), read_record(double_dir)
    assert two["status"] == "ok" and two["world_size"] == 2 and two["optimizer_steps"] == one["optimizer_steps"] == 3
    devices = two["per_device_memory"]
    assert [d["rank"] for d in devices] == [0, 1] and all(d["peak_rss_bytes"] > 0 and d["train_tokens_seen"] > 0 for d in devices)
    # Same number of sequences per optimizer step in both runs (3 steps x global batch 4), split in two.
    assert sum(d["train_tokens_seen"] for d in devices) == pytest.approx(one["train_tokens_seen"], rel=0.1)
    assert devices[0]["train_tokens_seen"] < 0.6 * one["train_tokens_seen"]
    # The same untrained weights on the same validation set (split over the devices, then averaged).
    assert two["val_losses"][0] == pytest.approx(one["val_losses"][0], rel=1e-3)
    assert all(math.isfinite(x) for x in two["train_losses"]) and two["adapter_path"]


@pytest.mark.xdist_group("train_cli_runs")
@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_sharded_training_matches_replicated_training(chat_file, tmp_path, adapter, request):
    # FSDP2 over two CPU processes (gloo) trains the same function as DDP: same losses, and the
    # weights gathered from the shards and saved by rank 0 are the ones DDP saved.
    args = tiny(chat_file, *CPU_RUN, f"adapter={adapter}", "trainer.devices=2")
    if adapter == "lora":  # the default adapter: ddp_run is this DDP run
        ddp, ddp_dir = request.getfixturevalue("ddp_run")
    else:
        ddp, ddp_dir = run_cli([*args, "trainer.strategy=ddp"], tmp_path / "ddp"), tmp_path / "ddp"
    fsdp = run_cli([*args, "trainer.strategy=fsdp"], tmp_path / "fsdp")
    assert ddp.returncode == 0 and fsdp.returncode == 0, fsdp.stderr[-3000:]
    replicated, sharded = read_record(ddp_dir), read_record(tmp_path / "fsdp")
    assert sharded["status"] == "ok" and sharded["world_size"] == 2 and len(sharded["per_device_memory"]) == 2
    assert sharded["train_losses"] == pytest.approx(replicated["train_losses"], rel=1e-4)
    assert sharded["val_losses"] == pytest.approx(replicated["val_losses"], rel=1e-4)
    key = "model_path" if adapter == "full" else "adapter_path"
    saved = {name: load_file(str(next(Path(r[key]).glob("*.safetensors")))) for name, r in
             (("ddp", replicated), ("fsdp", sharded))}
    assert saved["fsdp"].keys() == saved["ddp"].keys() and saved["fsdp"]
    for name, tensor in saved["ddp"].items():
        torch.testing.assert_close(saved["fsdp"][name], tensor, rtol=1e-4, atol=1e-6)
    if adapter == "lora":  # trained, not the initial adapter (lora_B starts at zero)
        assert any("lora_B" in name and tensor.abs().max() > 0 for name, tensor in saved["fsdp"].items())
