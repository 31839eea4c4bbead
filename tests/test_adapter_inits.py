"""Every peft LoRA initialisation (adapter.init) and VeRA on the tiny model: each composes, trains,
counts its parameters in the dry run as the run does, and saves an adapter that rebuilds the
trained model on the unmodified base."""

from __future__ import annotations

import math

import pytest
import torch

from harness import adapters
from harness.estimate import estimate_run
from harness.models import build_model
from harness.schema import ConfigError
from tests.helpers import compose_run, run_cli, tiny, train_in_process


@pytest.mark.parametrize("extra", [
    ["adapter.init=gaussian"],
    ["adapter.init=pissa"],
    ["adapter.init=pissa", "+adapter.init_options.niter=2"],
    ["adapter.init=olora"],
    ["adapter.init=eva", "adapter.init_examples=16"],
    ["adapter.init=corda", "adapter.init_examples=16"],
    ["adapter=dora", "adapter.init=gaussian"],
    ["adapter=dora", "adapter.init=eva", "adapter.init_examples=16"],
    ["adapter.init=eva", "adapter.init_examples=16", "quant=nf4"],
    ["adapter=vera", "adapter.r=16"],
    ["adapter=vera", "adapter.r=16", "quant=nf4"],
], ids=lambda extra: "-".join(e.split("=")[-1] for e in extra))
def test_init_trains_and_the_dry_run_counts_its_parameters(chat_file, tmp_path, extra):
    overrides = tiny(chat_file, *extra)
    record = train_in_process(overrides, tmp_path)
    assert record["status"] == "ok", record.get("error")
    assert math.isfinite(record["train_loss_last"]) and record["optimizer_steps"] == 3
    estimate = estimate_run(compose_run(overrides), "cpu")
    assert (estimate["trainable_params"], estimate["total_params"]) == (record["trainable_params"], record["total_params"])
    from peft import PeftConfig

    saved = PeftConfig.from_pretrained(record["adapter_path"])
    init = compose_run(overrides).adapter.init
    # A base-mutating init is saved converted: a plain LoRA of rank 2r on the unmodified base.
    assert saved.r == (16 if init in adapters.CONVERTED else compose_run(overrides).adapter.r)
    assert (tmp_path / adapters.INIT_DIR).is_dir() == (init in adapters.CONVERTED)


def _tiny_model(chat_file, *extra):
    run = compose_run(tiny(chat_file, *extra))
    torch.manual_seed(0)
    return run, build_model(run.model, run.quant, "32-true", "cpu")


@pytest.mark.parametrize("extra", [["adapter.init=pissa"], ["adapter.init=olora"], ["adapter.init=corda"],
                                   ["adapter.init=pissa", "+adapter.init_options.niter=2", "adapter.rslora=true"]],
                         ids=lambda e: "-".join(e))
def test_saved_adapter_of_a_base_mutating_init_rebuilds_the_trained_model(chat_file, tmp_path, extra):
    from peft import PeftConfig, PeftModel

    run, base = _tiny_model(chat_file, *extra)
    reference = {k: v.clone() for k, v in base.state_dict().items()}
    examples = [{"input_ids": list(range(5, 5 + n)), "labels": list(range(5, 5 + n))} for n in (9, 17, 12, 30)]
    model = adapters.apply_adapter(base, run.adapter, examples=examples, pad_id=2, init_dir=tmp_path / adapters.INIT_DIR)
    ids = torch.tensor([list(range(100, 140))])
    model.eval()  # no dropout: the same function of the weights both times
    with torch.no_grad():
        for param in model.parameters():  # "training": move every adapter weight
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
        trained = model(input_ids=ids).logits
    adapters.save_adapter(model, tmp_path / "adapter", run.adapter, tmp_path)
    fresh = build_model(run.model, run.quant, "32-true", "cpu")
    fresh.load_state_dict(reference)  # the unmodified base weights
    with torch.no_grad():
        rebuilt = PeftModel.from_pretrained(fresh, tmp_path / "adapter")(input_ids=ids).logits
    torch.testing.assert_close(rebuilt, trained, atol=2e-4, rtol=1e-4)
    # A plain LoRA: loading it redoes no SVD (or CorDA pass) on the base.
    saved = PeftConfig.from_pretrained(tmp_path / "adapter")
    assert saved.init_lora_weights is True and saved.r == 2 * run.adapter.r


@pytest.mark.parametrize("extra,message", [
    (["adapter.init=pissa", "quant=nf4"], "quant.mode: adapter.init=pissa rewrites the base weights"),
    (["adapter=full", "adapter.init=eva"], "adapter.init: eva initialises LoRA/DoRA weights; adapter=full"),
    (["adapter=vera", "adapter.init=olora"], "adapter.init: olora initialises LoRA/DoRA weights; adapter=vera"),
    (["adapter=dora", "adapter.init=olora"], "adapter.init: olora with adapter=dora: peft's conversion"),
    (["adapter.init=svd"], "adapter.init: got 'svd', expected one of"),
    (["adapter.init=corda", "trainer.devices=2", "trainer.strategy=ddp"], "adapter.init: corda reads its data in one process"),
    (["adapter.init=loftq"], "trainer.save_weights: adapter.init=loftq"),
    (["+adapter.init_options.rho=2"], "adapter.init_options: takes effect only with an adapter.init"),
    (["adapter.init=eva", "adapter.init_examples=0"], "adapter.init_examples: must be > 0"),
])
def test_invalid_init_combinations_are_refused_naming_the_key(chat_file, extra, message):
    with pytest.raises(ConfigError) as info:
        compose_run(tiny(chat_file, *extra))
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("extra,line", [
    (["adapter.init=loftq", "trainer.save_weights=false"],
     "error: adapter.init: loftq needs a CUDA GPU (peft's LoftQ quantizes on CUDA); none is in use here"),
    (["adapter.init=corda", "quant=nf4"], "error: quant.mode: adapter.init=corda rewrites the base weights in 16/32 bits "
                                          "(loftq quantizes them itself); use quant=none"),
], ids=["loftq-on-cpu", "corda-nf4"])
def test_refused_init_is_one_error_line_before_anything_loads(chat_file, tmp_path, extra, line):
    result = run_cli(tiny(chat_file, *extra), tmp_path / "run")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [line]
    assert not (tmp_path / "run" / "record.json").exists()


@pytest.mark.parametrize("extra", [["adapter.init=pissa"], ["adapter=vera", "adapter.r=16"]], ids=lambda e: "-".join(e))
def test_saved_adapter_scores_as_the_trained_model_did(chat_file, tmp_path, extra, capsys):
    """The record's in-process score of the trained model == ``harness.eval`` on the saved adapter
    (reloaded on a freshly built base) and on the merged export. The export and the scoring are
    called as their command lines' ``main`` in this process (their CLIs are run as processes in
    test_train and test_evaluate; here a process each cost seconds of imports)."""
    import json

    from harness.eval import main as eval_main
    from harness.export import main as export_main

    task = "harness_arith_2da"
    run_dir = tmp_path / "run"
    record = train_in_process(tiny(chat_file, "optimizer.lr=0.02", *extra) + ["eval=custom", f"eval.tasks=[{task}]", "eval.limit=20"],
                              run_dir)
    assert record["status"] == "ok", record.get("error")
    assert record["eval_delta"][task]["perplexity"] != 0  # training moved the scores
    capsys.readouterr()  # the training's output
    export_main([str(run_dir)])
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run_dir / "merged")
    for path in (run_dir, run_dir / "merged"):
        capsys.readouterr()
        eval_main([str(path), "--tasks", task, "--limit", "20", "--device", "cpu"])
        printed = capsys.readouterr().out
        got = json.loads(printed[printed.index("{"):])[task]["perplexity"]["value"]  # the JSON the CLI prints last
        assert got == pytest.approx(record["eval"][task]["perplexity"]["value"], rel=1e-4), path


def test_eva_that_moves_rank_between_layers_trains_and_the_dry_run_says_so(chat_file, tmp_path):
    overrides = tiny(chat_file, "adapter.init=eva", "adapter.init_examples=16", "+adapter.init_options.rho=2")
    record = train_in_process(overrides, tmp_path)
    assert record["status"] == "ok", record.get("error")
    estimate = estimate_run(compose_run(overrides), "cpu")
    assert any("rho 2" in note for note in estimate["memory_estimate"]["assumptions"])
    # The total rank is kept: within the spread of the layers' shapes of the rank-r count.
    assert 0.5 * estimate["trainable_params"] <= record["trainable_params"] <= 2 * estimate["trainable_params"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (peft's LoftQ quantizes on CUDA)")
def test_loftq_trains_on_a_gpu_and_the_dry_run_counts_its_parameters(chat_file, tmp_path):
    overrides = tiny(chat_file, "adapter.init=loftq", "trainer.save_weights=false", "trainer.accelerator=gpu")
    record = train_in_process(overrides, tmp_path)
    assert record["status"] == "ok", record.get("error")
    assert math.isfinite(record["train_loss_last"])
    assert estimate_run(compose_run(overrides), "cuda")["trainable_params"] == record["trainable_params"]
