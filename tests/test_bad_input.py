"""Bad input: one line on stderr naming the key, file or line; exit code 2; no record claiming
success; and no model weights loaded first."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import run_cli

TINY = ["model=tiny", "trainer=smoke", "logger=none", "eval=none"]
SWEEP = ["+sweep=custom", "+sweep.space.adapter.r=[8]"]
# A local model folder, a tokenizer that loads, and a data file that does not exist: the folder's
# error must come first.
MODEL_FOLDER = ["model=hf", "model.tokenizer={root}/tokenizer", "data=alpaca_file", "data.path={root}/nope.jsonl"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    good = [{"instruction": f"Say {i}.", "input": "", "output": f"{i}"} for i in range(30)]
    (root / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    lines = [json.dumps(r) for r in good[:6]]
    lines[3] = lines[3][:-5]  # line 4 is cut short
    (root / "malformed.jsonl").write_text("\n".join(lines) + "\n")
    (root / "empty.jsonl").write_text("")
    (root / "nofield.jsonl").write_text(json.dumps({"instruction": "x", "input": ""}) + "\n")
    (root / "latin1.jsonl").write_bytes(json.dumps({"instruction": "caf", "input": "", "output": "x"}).encode()[:-3] + b"\xe9\"}\n")
    (root / "truncated.json").write_text(json.dumps(good[:5])[:-40])
    (root / "wrongfields.jsonl").write_text(json.dumps({"prompt": "x", "completion": "y"}) + "\n")
    (root / "huge.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good[:3])
                                     + json.dumps({"instruction": "x" * 1_200_000, "input": "", "output": "y"}) + "\n")
    (root / "notes.txt").write_text("just some text, not JSON\n")
    from harness.bench import bench_tokenizer

    bench_tokenizer(root / "tokenizer")  # 13 tokens, no embedded package needed
    # Data files JSON allows but no text or parser can use.
    (root / "surrogate.jsonl").write_text(json.dumps(good[0]) + "\n" + '{"instruction": "a \\ud800 b", "input": "", "output": "x"}\n')
    (root / "deep.jsonl").write_text('{"instruction": ' + "[" * 200_000 + "]" * 200_000 + ', "input": "", "output": "x"}\n')
    (root / "roles.jsonl").write_text("".join(json.dumps({"conversations": [{"from": "customer", "value": "hi"},
                                                                             {"from": "agent", "value": "hello"}]}) + "\n"
                                              for _ in range(3)))
    # Sweep storages: random bytes, and a real Optuna database cut in half.
    (root / "corrupt.db").write_bytes(bytes(range(256)) * 20)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{root / 'whole.db'}", study_name="custom")
    for _ in range(20):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1))
    whole = (root / "whole.db").read_bytes()
    (root / "truncated.db").write_bytes(whole[: len(whole) // 2])
    (root / "journal_sweep").mkdir()
    (root / "journal_sweep" / "optuna.journal").write_text('{"op_code": 0, "worker_id": "a"\nnot json\n')
    # Model folders broken one way each.
    model_folders(root)
    return root


def model_folders(root):
    """A whole tiny HF model folder, and copies of it broken one way each."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1)
    LlamaForCausalLM(config).save_pretrained(root / "whole_model")
    for name in ("corrupt_config", "truncated_weights", "no_weights"):
        shutil.copytree(root / "whole_model", root / name)
    (root / "corrupt_config" / "config.json").write_text('{"model_type": "llama", "hidden_size": 16,')
    weights = root / "truncated_weights" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    (root / "no_weights" / "model.safetensors").unlink()
    shutil.copytree(root / "tokenizer", root / "tokenizer_only")


CASES = [
    # (id, overrides, text that the one error line must contain)
    ("unknown option", ["adapter=lorax"], "adapter/lorax: no such option; available: dora, full, lora"),
    ("unknown key", ["trainer.epoch=2"], "trainer.epoch: unknown key; did you mean trainer.epochs?"),
    ("wrong type", ["adapter.r=eight"], "adapter.r"),
    ("rank zero", ["adapter.r=0"], "adapter.r: must be > 0"),
    ("alpha negative", ["adapter.alpha=-16"], "adapter.alpha: must be > 0"),
    ("dropout one", ["adapter.dropout=1"], "adapter.dropout: must be in [0, 1)"),
    ("lr zero", ["optimizer.lr=0"], "optimizer.lr: must be > 0"),
    ("micro-batch zero", ["trainer.micro_batch_size=0"], "trainer.micro_batch_size: must be > 0"),
    ("global not multiple", ["trainer.micro_batch_size=4", "trainer.global_batch_size=6"], "trainer.global_batch_size: 6 is not a multiple"),
    ("unknown target preset", ["adapter.targets=everything"], "adapter.targets"),
    ("target missing in architecture", ["adapter.targets=[q_proj,wqkv]"], "adapter.targets: wqkv not in this architecture"),
    ("unknown quant mode", ["quant=nf3"], "quant/nf3: no such option"),
    ("quant on full fine-tune", ["adapter=full", "quant=nf4"], "quant.mode"),
    ("missing data file", ["data=alpaca_file", "data.path={root}/nope.jsonl"], "nope.jsonl"),
    ("malformed JSON line", ["data=alpaca_file", "data.path={root}/malformed.jsonl"], "malformed.jsonl line 4: invalid JSON"),
    ("empty data file", ["data=alpaca_file", "data.path={root}/empty.jsonl"], "empty.jsonl"),
    ("missing field", ["data=alpaca_file", "data.path={root}/nofield.jsonl"], "'output'"),
    ("non-UTF-8 data", ["data=alpaca_file", "data.path={root}/latin1.jsonl"], "UTF-8"),
    ("truncated JSON array", ["data=alpaca_file", "data.path={root}/truncated.json"], "truncated JSON array"),
    ("fields of another format", ["data=alpaca_file", "data.path={root}/wrongfields.jsonl"], "line 1: missing field 'instruction'"),
    ("absurdly long example", ["data=alpaca_file", "data.path={root}/huge.jsonl"], "huge.jsonl line 4: one example of 1,200,001 characters"),
    ("not JSON at all", ["data=alpaca_file", "data.path={root}/notes.txt"], "notes.txt line 1: invalid JSON"),
    ("data path is a folder", ["data=alpaca_file", "data.path={root}"], "data.path"),
    ("global batch not divisible over devices", ["trainer.devices=2", "trainer.micro_batch_size=2", "trainer.global_batch_size=6"],
     "trainer.global_batch_size: 6 is not a multiple of trainer.micro_batch_size=2 x trainer.devices=2"),
    ("unknown strategy", ["trainer.devices=2", "trainer.strategy=deepspeed"], "trainer.strategy: got 'deepspeed'"),
    ("compile mode without compile", ["trainer.compile_mode=reduce-overhead"],
     "trainer.compile_mode: reduce-overhead takes effect only with trainer.compile=true"),
    ("graph widths without CUDA graphs", ["trainer.compile=true", "trainer.graph_widths=4"],
     "trainer.graph_widths: takes effect only under CUDA graphs"),
    ("no graph widths", ["trainer.compile=true", "trainer.compile_mode=reduce-overhead", "trainer.graph_widths=0"],
     "trainer.graph_widths: must be > 0, got 0"),
    ("sharding over one device", ["trainer.strategy=fsdp"], "trainer.strategy: fsdp shards the model over several devices"),
    ("sharding quantized weights", ["trainer.devices=2", "trainer.strategy=fsdp", "quant=nf4"],
     "quant.mode: trainer.strategy=fsdp cannot shard bitsandbytes-quantized weights"),
    ("8-bit optimizer on shards", ["trainer.devices=2", "trainer.strategy=fsdp", "optimizer=adamw_8bit"],
     "optimizer.name: adamw_8bit does not step sharded"),
    ("optimizer package missing", ["optimizer.target=no_such_package.Optim", "optimizer.requires=pip install no-such-package"],
     "optimizer=adamw: cannot import no_such_package.Optim (pip install no-such-package)"),
    ("unknown schedule", ["scheduler.type=cosine_typo"], "scheduler.type: got 'cosine_typo', expected one of linear, cosine"),
    ("checkpoint interval zero", ["trainer.checkpoint_every_n_steps=0"], "trainer.checkpoint_every_n_steps: must be > 0"),
    ("resume from a missing checkpoint", ["data=alpaca_file", "data.path={root}/good.jsonl", "trainer.resume={root}/nope.ckpt"],
     "trainer.resume="),
    ("GGUF path missing", ["model=hf", "model.name_or_path=./missing.gguf"], "missing.gguf"),
    ("hub dataset offline", ["data=alpaca_cleaned"], "yahma/alpaca-cleaned"),
    ("hub model offline", ["model=hf", "model.name_or_path=some-org/some-model", "model.tokenizer=null"], "some-org/some-model"),
    ("missing model folder", ["model=hf", "model.name_or_path=./no/such/folder"], "no/such/folder"),
    ("path without value", ["data=alpaca_file"], "data.path"),
    ("tokenizer larger than the vocabulary", ["data=alpaca_file", "data.path={root}/good.jsonl", "model.tokenizer={root}/tokenizer",
                                              "model.arch.vocab_size=8"],
     "model.tokenizer: the tokenizer has 13 tokens but the model's vocabulary has 8"),
    # Keys the schema does not have, at any depth, with or without +: named, with the key probably meant.
    ("unknown key added with +", ["+trainer.foo=1"], "trainer.foo: unknown key; the keys of trainer are"),
    ("unknown top-level key", ["+foo=1"], "foo: unknown key; the keys are adapter, data"),
    ("misspelt key added with +", ["+trainer.epoch=2"], "trainer.epoch: unknown key; did you mean trainer.epochs?"),
    ("peft's name for a key", ["+adapter.rank=64"], "adapter.rank: unknown key; did you mean adapter.r?"),
    ("unknown key under a new key", ["+data.foo.bar=1"], "data.foo: unknown key"),
    ("unknown sweep key", ["+sweep=custom", "+sweep.space.adapter.r=[8]", "+sweep.seed=[1,2]"], "sweep.seed: unknown key; did you mean sweep.seeds?"),
    # Legal floats that are no legal setting, seeds numpy refuses, settings the model or data cannot honour.
    ("learning rate infinite", ["optimizer.lr=inf"], "optimizer.lr: must be a finite number, got inf"),
    ("alpha nan", ["adapter.alpha=nan"], "adapter.alpha: must be a finite number, got nan"),
    ("alpha over r infinite", ["adapter.alpha_over_r=inf"], "adapter.alpha_over_r: must be a finite number, got inf"),
    ("eps nan", ["optimizer.eps=nan"], "optimizer.eps: must be a finite number, got nan"),
    ("lr ratio infinite", ["+optimizer.lr_ratios.lora_B=inf"], "optimizer.lr_ratios.lora_B: must be a finite number, got inf"),
    ("beta nan", ["optimizer.betas=[0.9,nan]"], "optimizer.betas[1]: must be a finite number, got nan"),
    ("infinite value in a sweep space", ["+sweep=custom", "+sweep.space.optimizer.lr=[1e-4,inf]"],
     "sweep.space.optimizer.lr[1]: must be a finite number, got inf"),
    ("seed negative", ["seed=-1"], "seed: must be in [0, 4294967295] (numpy's seed range), got -1"),
    ("seed past numpy's range", ["seed=4294967296"], "seed: must be in [0, 4294967295]"),
    ("data seed past numpy's range", ["data.seed=-3"], "data.seed: must be in [0, 4294967295]"),
    ("held-out task without a test split", ["eval=local", "data.test_size=0"],
     "data.test_size: is 0, but eval task harness_heldout scores the test split"),
    ("rank larger than the layer", ["adapter.r=40"], "adapter.r=40: larger than v_proj (64 -> 32) of this architecture"),
    ("resume file that is not a checkpoint", ["trainer.resume={root}/notes.txt"], "notes.txt: not a checkpoint"),
    ("resume override without a resume", ["trainer.resume_override=true"],
     "trainer.resume_override: takes effect only when resuming; set trainer.resume=auto or a checkpoint path"),
    # Sweeps: refused before the study opens or any trial runs.
    ("unknown sweep", ["+sweep=nope"], "sweep/nope: no such option"),
    ("sweep with empty space", ["+sweep=custom"], "sweep.space: is empty"),
    ("unknown sampler", ["+sweep=rank_alpha", "sweep.sampler=bayes"], "sweep.sampler: got 'bayes'"),
    ("range in a grid", ["+sweep=custom", "+sweep.space.optimizer.lr={low:1e-5,high:1e-3}"], "cannot be gridded"),
    ("swept key also on the command line", ["+sweep=rank_alpha", "adapter.r=16"], "adapter.r: is swept by sweep rank_alpha"),
    ("invalid grid point", ["+sweep=custom", "+sweep.space.adapter.r=[8,0]"], "adapter.r: must be > 0, got 0 (in sweep custom, at adapter.r=0)"),
    ("objective task not scored", ["+sweep=custom", "+sweep.space.adapter.r=[8]", "data=alpaca_file", "data.path={root}/good.jsonl",
                                   "sweep.objectives=[{metric:eval.harness_heldout.token_nll,direction:minimize}]"],
     "needs task harness_heldout in eval.tasks"),
    ("seed axis and sweep.seeds", ["+sweep=custom", "+sweep.space.seed=[1,2]", "sweep.seeds=[3,4]"],
     "sweep.seeds: sweep custom also sweeps seed in sweep.space"),
    ("objective no record has", ["+sweep=custom", "+sweep.space.adapter.r=[8]",
                                 "sweep.objectives=[{metric:val_los_last,direction:minimize}]"],
     "sweep.objectives: 'val_los_last' is not a metric of a run record; did you mean val_loss_last?"),
    ("malformed space", ["+sweep=custom", "+sweep.space.adapter.r={low:8}"], "sweep.space.adapter.r: expected a list of values"),
    ("objective not scored without the quantized context", ["+sweep=custom", "+sweep.space.adapter.r=[8]", "quant=nf4",
                                                            "eval=probes", "eval.quantized_context=false",
                                                            "sweep.objectives=[{metric:eval_quantized.harness_heldout.token_nll,direction:minimize}]"],
     "sweep.objectives: 'eval_quantized.harness_heldout.token_nll' is not scored with eval.quantized_context=false"),
    # Storage and the file system: the URL (password masked) or the path, and what to do; before any trial.
    ("storage server down", [*SWEEP, "sweep.storage=postgresql://harness:secret@127.0.0.1:1/sweeps"],
     "sweep.storage=postgresql://harness:***@127.0.0.1:1/sweeps: cannot reach the database server"),
    ("removed storage backend", [*SWEEP, "sweep.storage=redis://localhost:6379/0"],
     "sweep.storage=redis://localhost:6379/0: not a storage the harness can open"),
    ("sqlite storage in a missing folder", [*SWEEP, "sweep.storage=sqlite:///{root}/no/such/optuna.db"],
     "no/such does not exist; create it"),
    ("corrupt optuna.db", [*SWEEP, "sweep.storage=sqlite:///{root}/corrupt.db"],
     "corrupt.db is not a readable Optuna database (corrupt or truncated: file is not a database); move it away"),
    ("truncated optuna.db", [*SWEEP, "sweep.storage=sqlite:///{root}/truncated.db"],
     "truncated.db is not a readable Optuna database (corrupt or truncated: database disk image is malformed)"),
    ("corrupt journal storage", [*SWEEP, "sweep.storage=journal", "hydra.sweep.dir={root}/journal_sweep"],
     "optuna.journal is not a readable Optuna journal (corrupt or truncated"),
    ("run dir is a file", ["hydra.run.dir={root}/notes.txt"], "notes.txt: is a file, not a folder"),
    ("run dir under a file", ["hydra.run.dir={root}/notes.txt/run"], "notes.txt is a file, so no folder can be made under it"),
    ("sweep dir is a file", [*SWEEP, "hydra.sweep.dir={root}/notes.txt"], "notes.txt: is a file, not a folder"),
    ("sweep dir under a file", [*SWEEP, "hydra.sweep.dir={root}/notes.txt/sweep"], "notes.txt is a file, so no folder"),
    # Data and model files: what is wrong with the file or folder; the model folder before the (missing) data.
    ("lone surrogate in a JSON string", ["data=alpaca_file", "data.path={root}/surrogate.jsonl"],
     "surrogate.jsonl line 2: holds a lone surrogate (\\ud800 without its pair)"),
    ("absurd nesting depth", ["data=alpaca_file", "data.path={root}/deep.jsonl"],
     "deep.jsonl line 1: JSON nested deeper than the parser can read"),
    ("no ShareGPT role matches", ["data=sharegpt_file", "data.path={root}/roles.jsonl"],
     "the speaker roles found are 'customer' x3, 'agent' x3, expected a user turn (human/user)"),
    ("model folder with a corrupt config.json", [*MODEL_FOLDER, "model.name_or_path={root}/corrupt_config"],
     "corrupt_config: config.json is not valid JSON"),
    ("model folder with truncated weights", [*MODEL_FOLDER, "model.name_or_path={root}/truncated_weights"],
     "truncated_weights: model.safetensors is truncated"),
    ("model folder without weights", [*MODEL_FOLDER, "model.name_or_path={root}/no_weights"],
     "no_weights: has config.json but no weights"),
    ("tokenizer files only", [*MODEL_FOLDER, "model.name_or_path={root}/tokenizer_only"],
     "tokenizer_only: holds only tokenizer files (no config.json, no weights)"),
    ("model path is a file", [*MODEL_FOLDER, "model.name_or_path={root}/notes.txt"], "notes.txt: is a file, not an HF model folder"),
    # Hydra's own command line.
    ("value the override grammar cannot read", ["data=alpaca_file", "data.path={root}/(x).jsonl"],
     "if it is a plain string (a path), quote it inside the argument: \"data.path='"),
    ("--multirun", ["-m"], "--multirun: sweeps run through the harness's own driver; use +sweep=NAME"),
]
if not torch.cuda.is_available():
    CASES.append(("no GPU", ["trainer.accelerator=gpu"], "trainer.accelerator=gpu: no CUDA GPU"))
    CASES.append(("liger kernels without a GPU", ["trainer.liger_kernels=true"], "trainer.liger_kernels=true: liger-kernel's Triton kernels need a CUDA GPU"))
    CASES.append(("flash-attention without a GPU", ["model.attn_implementation=flash_attention_2"],
                  "model.attn_implementation=flash_attention_2: needs a CUDA GPU"))
    CASES.append(("flex-attention without a GPU", ["model.attn_implementation=flex_attention"],
                  "model.attn_implementation=flex_attention: training needs a CUDA GPU"))


@pytest.mark.parametrize("overrides,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(files, tmp_path, overrides, expected):
    run_dir = tmp_path / "run"
    args = TINY + [o.replace("{root}", str(files)) for o in overrides]
    if any(o.startswith("model=") for o in overrides):
        args.remove("model=tiny")
    if any(o.startswith("+sweep=") for o in overrides) and not any(o.startswith("hydra.sweep.dir=") for o in overrides):
        args.append(f"hydra.sweep.dir={tmp_path / 'sweep'}")
    named_run_dir = any(o.startswith("hydra.run.dir=") for o in overrides)
    result = run_cli(args, None if named_run_dir else run_dir, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert expected in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert "secret" not in result.stdout + result.stderr  # a storage password is never shown
    assert "Loading weights" not in result.stdout + result.stderr
    record = run_dir / "record.json"
    assert not record.exists() or json.loads(record.read_text())["status"] != "ok"
    assert not (tmp_path / "sweep" / "trials").exists()


# -- the other entry points: harness.export, harness.eval and the record loader -------------------

@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    """One finished tiny run, and copies of it broken one way each."""
    import shutil

    root = tmp_path_factory.mktemp("entry")
    run_dir = root / "run"
    result = run_cli(TINY + ["data=alpaca_file", f"data.path={files}/good.jsonl", "data.test_size=4", "data.val_size=4"],
                     run_dir, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = (run_dir / "record.json").read_text()
    broken = {"truncated": text[: len(text) // 2], "not_object": "[1, 2]",
              "no_status": json.dumps({k: v for k, v in json.loads(text).items() if k != "status"})}
    for name, content in broken.items():
        (root / name).mkdir()
        (root / name / "record.json").write_text(content)
    shutil.copytree(run_dir, root / "copied")
    shutil.rmtree(root / "copied" / "adapter")  # the original's adapter is still there: never used
    (root / "a_file").write_text("x")
    return root


ENTRY_CASES = [
    ("export of a truncated record", ["harness.export", "{root}/truncated"], "truncated/record.json: not a readable run record"),
    ("export of a record that is no object", ["harness.export", "{root}/not_object"], "a JSON object expected, got list"),
    ("export of a record without a status", ["harness.export", "{root}/no_status"], "not a run record (status None"),
    ("export of a copied run dir without its adapter", ["harness.export", "{root}/copied"], "copied/adapter: the run's adapter folder is missing"),
    ("export --out an existing file", ["harness.export", "{root}/run", "--out", "{root}/a_file"], "a_file: is an existing file"),
    ("eval --limit 0", ["harness.eval", "{root}/run", "--limit", "0"], "--limit 0: must be > 0"),
    ("eval --batch-size negative", ["harness.eval", "{root}/run", "--batch-size", "-2"], "--batch-size -2: must be > 0"),
    ("eval of an unknown task", ["harness.eval", "{root}/run", "--tasks", "harness_arith_2da", "hellaswagg"],
     "--tasks: no such lm-eval task: hellaswagg"),
    ("eval of a record without a status", ["harness.eval", "{root}/no_status"], "not a run record (status None"),
]
if not torch.cuda.is_available():
    ENTRY_CASES.append(("eval --device cuda without a GPU", ["harness.eval", "{root}/run", "--device", "cuda"],
                        "--device cuda: no CUDA GPU is available"))


@pytest.mark.xdist_group("bad_input_trained")  # one worker trains the fixture run once
@pytest.mark.parametrize("args,expected", [c[1:] for c in ENTRY_CASES], ids=[c[0] for c in ENTRY_CASES])
def test_entry_points_fail_in_one_clear_line(trained, args, expected):
    import subprocess
    import sys

    from harness.paths import REPO_ROOT

    cmd = [sys.executable, "-m", *[a.replace("{root}", str(trained)) for a in args]]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("WARNING", "INFO"))]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert expected in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (trained / "copied" / "merged").exists()


@pytest.mark.xdist_group("bad_input_trained")  # one worker trains the fixture run once
def test_the_record_loader_never_counts_a_record_without_status_as_ok(trained):
    from harness.results import RecordError, load_records

    assert list(load_records(trained / "run")["status"]) == ["ok"]
    for name in ("no_status", "truncated", "not_object"):
        with pytest.raises(RecordError, match=name):
            load_records(trained / name)


# -- Hydra's own flags, paths Hydra's grammar needs quoted, ShareGPT roles, shared examples ----------

def test_hydra_flags_work_as_hydra_documents(tmp_path):
    import yaml

    never = tmp_path / "never"  # the run dir: printing a config or help starts no run
    for flags in (["--cfg", "job"], ["-c", "job"]):
        result = run_cli([*TINY, *flags, "adapter.r=4"], never)
        assert result.returncode == 0, result.stderr[-2000:]
        config = yaml.safe_load(result.stdout)
        assert config["model"]["name"] == "tiny" and config["adapter"]["r"] == 4  # the job's config, overrides applied
    info = run_cli(["model=tiny", "--info", "trainer=smoke"], never)  # flags may stand among the overrides
    assert info.returncode == 0 and "Config search path" in info.stdout, info.stderr[-2000:]
    helped = run_cli(["--help"], never)
    assert helped.returncode == 0 and "Configuration groups" in helped.stdout and "adapter: " in helped.stdout
    refused = run_cli([*TINY, "--cfg", "job", "adapter.r=0"], never)  # a bad value is still one line
    assert refused.returncode == 2 and refused.stderr.strip() == "error: adapter.r: must be > 0, got 0"
    assert not never.exists()


def test_paths_with_spaces_and_non_ascii_letters_work(tmp_path):
    folder = tmp_path / "my data" / "données ü"
    folder.mkdir(parents=True)
    rows = [{"instruction": f"Say {i}.", "input": "", "output": f"{i}"} for i in range(30)]
    (folder / "train set é.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run dir ü"
    result = run_cli([*TINY, "data=alpaca_file", f"data.path={folder / 'train set é.jsonl'}", "data.test_size=4",
                      "data.val_size=4"], run_dir, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "ok" and record["data"]["source"] == str(folder / "train set é.jsonl")


def test_sharegpt_accepts_the_common_role_spellings_unless_strict(tmp_path):
    from harness.data import load_examples
    from tests.helpers import compose_run

    turns = [("USER", "Assistant"), ("Human", "GPT"), ("human", "gpt"), ("user", "chatgpt"), ("customer", "agent")]
    path = tmp_path / "roles.jsonl"
    path.write_text("".join(json.dumps({"conversations": [{"from": "system", "value": "Be brief."},
                                                          {"from": u, "value": f"q{i}"}, {"from": a, "value": f"a{i}"}]}) + "\n"
                            for i, (u, a) in enumerate(turns))
                    + json.dumps({"messages": [{"role": "Human", "content": "q5"}, {"role": "GPT", "content": "a5"}]}) + "\n")
    examples, stats = load_examples(compose_run(["data=sharegpt_file", f"data.path={path}"]).data)
    assert [e["output"] for e in examples] == ["a0", "a1", "a2", "a3", "a5"] and stats["skip_reasons"] == {"not_human_first": 1}
    strict, _ = load_examples(compose_run(["data=sharegpt_file", f"data.path={path}", "data.roles=strict"]).data)
    assert [e["output"] for e in strict] == ["a2"]  # the layout's own names only: human/gpt in conversations
    # The embedded configs keep the strict names, so the embedded file yields the examples it always has.
    for option in ("sharegpt_lima", "sharegpt_full"):
        assert compose_run([f"data={option}"]).data.roles == "strict"
    assert compose_run(["data=sharegpt_file", "data.path=x"]).data.roles == "any"


def test_splits_that_share_examples_are_warned_about(caplog):
    from harness.data import split_examples
    from tests.helpers import compose_run

    cfg = compose_run(["data=alpaca_file", "data.path=x", "data.test_size=4", "data.val_size=4"]).data
    rows = [{"input_ids": [i % 10], "labels": [i % 10]} for i in range(40)]  # each example 4 times
    with caplog.at_level("WARNING", logger="harness.data"):
        split_examples(rows, cfg)
    assert "the splits share examples" in caplog.text and "test examples also in train" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="harness.data"):
        split_examples([{"input_ids": [i], "labels": [i]} for i in range(40)], cfg)
    assert "share examples" not in caplog.text
