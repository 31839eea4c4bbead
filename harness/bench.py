"""Speed and memory, side by side: the plain transformers + peft loop vs the harness's own path.

    python -m harness.bench                       # the default list, on the GPU
    python -m harness.bench --configs 135m_lora_all --steps 20 --out bench.json
    python -m harness.bench --configs estimate --paths harness --harness-overrides --steps 2 --warmup 1
    python -m harness.bench --configs 135m_lora_all --steps 300 --sweep-trials 24 --trials-per-gpu 12

Every (configuration, path) runs in its own process, so peak memory is clean. Both paths train
the same random-init model (real shapes; speed and memory do not depend on the weights) on the
same batches: synthetic examples truncated to exactly ``seq`` tokens, no gradient accumulation.
The reference is what a user writes from the docs: ``AutoModelForCausalLM`` + ``get_peft_model``
with default peft settings (``prepare_model_for_kbit_training`` under QLoRA) + ``torch.optim.AdamW``
in a Python loop. The harness path runs with its speed switches (``--harness-overrides``).
Rates exclude the first ``--warmup`` optimizer steps. Harness rows also hold the dry-run
memory estimate of the run and its ratio to the measured peak.

``--sweep-trials N`` measures whole sweeps instead: trials per hour of the plain loop run one
trial after another (each a process, start-up included) against a harness sweep
(``+sweep=custom`` over N seeds, ``--trials-per-gpu`` at a time) of trials of the same shape.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .compose import compose

# name: (overrides shared by both paths, micro-batch). Shapes and settings of DESIGN section 6.
CONFIGS: dict[str, tuple[list[str], int]] = {
    "7b_lora_qv": (["model=llama2_7b", "adapter.targets=qv"], 4),
    "7b_lora_all": (["model=llama2_7b", "adapter.targets=all_linear"], 4),
    "7b_qlora_all": (["model=llama2_7b", "adapter.targets=all_linear", "quant=nf4"], 4),
    "135m_lora_all": (["model=smollm2_135m", "adapter.targets=all_linear"], 8),
    # More 7B shapes for checking the dry-run memory estimate (LoRA/QLoRA, q,v/all, r 8/256,
    # micro-batch 1/4): run with --paths harness.
    "7b_lora_qv_mb1": (["model=llama2_7b", "adapter.targets=qv"], 1),
    "7b_lora_all_r256": (["model=llama2_7b", "adapter.targets=all_linear", "adapter.r=256", "adapter.alpha=512"], 4),
    "7b_qlora_qv_mb1": (["model=llama2_7b", "adapter.targets=qv", "quant=nf4"], 1),
    "7b_qlora_all_r256_mb1": (["model=llama2_7b", "adapter.targets=all_linear", "quant=nf4", "adapter.r=256",
                               "adapter.alpha=512"], 1),
    # Issue 18's estimate shapes besides (with --paths harness): double quant, int8, lm_head
    # adapted, full fine-tuning, DoRA, mixed precision, compile on, a long sequence.
    "7b_qlora_all_dq_mb1": (["model=llama2_7b", "adapter.targets=all_linear", "quant=nf4", "quant.double_quant=true"], 1),
    "7b_int8_qv_mb1": (["model=llama2_7b", "adapter.targets=qv", "quant=int8"], 1),
    "7b_lora_lm_head_mb1": (["model=llama2_7b", "adapter.targets=all"], 1),
    "7b_full_bf16_mb1": (["model=llama2_7b", "adapter=full", "trainer.precision=bf16-true"], 1),
    "135m_lora_all_compiled": (["model=smollm2_135m", "adapter.targets=all_linear", "trainer.compile=true",
                                "trainer.compile_mode=reduce-overhead", "trainer.recompute_lora_dropout=true"], 8),
    "7b_lora_qv_compiled": (["model=llama2_7b", "adapter.targets=qv", "trainer.compile=true",
                             "trainer.recompute_lora_dropout=true"], 4),
    "7b_qlora_all_dq_mb1_compiled": (["model=llama2_7b", "adapter.targets=all_linear", "quant=nf4",
                                      "quant.double_quant=true", "trainer.compile=true",
                                      "trainer.recompute_lora_dropout=true"], 1),
    "135m_lora_all_seq2048": (["model=smollm2_135m", "adapter.targets=all_linear", "data.max_seq_len=2048"], 2),
    "135m_dora_all": (["model=smollm2_135m", "adapter=dora", "adapter.targets=all_linear"], 8),
    "135m_full_mixed": (["model=smollm2_135m", "adapter=full", "trainer.precision=bf16-mixed"], 8),
    "135m_int8_qv": (["model=smollm2_135m", "adapter.targets=qv", "quant=int8"], 8),
    # CPU-sized, for the tests.
    "tiny_lora_all": (["model=tiny", "adapter.targets=all_linear"], 2),
}
DEFAULT_CONFIGS = ["7b_lora_all", "7b_qlora_all", "135m_lora_all"]
# 15 shapes for one call (issue 18: "at least 12 shapes in one bench call"), eager unless named.
ESTIMATE_CONFIGS = ["7b_lora_qv", "7b_lora_all", "7b_qlora_all", "7b_qlora_all_dq_mb1", "7b_int8_qv_mb1",
                    "7b_lora_lm_head_mb1", "7b_full_bf16_mb1", "7b_lora_qv_compiled", "7b_qlora_all_dq_mb1_compiled",
                    "135m_lora_all", "135m_lora_all_compiled", "135m_lora_all_seq2048", "135m_dora_all",
                    "135m_full_mixed", "135m_int8_qv"]
PATHS = ("reference", "harness")
# The harness's speed switches the bench turns on by default (each a trainer.* key; see README).
# liger_kernels is left out: with compile on it was slower on an H100 (docs/benchmarks.md).
FAST_GPU = ["trainer.compile=true", "trainer.recompute_lora_dropout=true"]
# Small models are launch-bound: CUDA graphs (compile_mode=reduce-overhead) replay each block's
# kernels in one launch. Measured on the 135M shape, whose bench batches all have one width.
FAST_GPU_SMALL = [*FAST_GPU, "trainer.compile_mode=reduce-overhead"]
SMALL_CONFIGS = ("135m_lora_all",)
FAST_CPU = ["trainer.recompute_lora_dropout=true"]


def switches_for(name: str, harness_overrides: list[str] | None) -> list[str]:
    """The harness path's speed switches for one configuration: ``harness_overrides`` when given,
    else the defaults for this machine and model size."""
    if harness_overrides is not None:
        return list(harness_overrides)
    import torch

    if not torch.cuda.is_available():
        return FAST_CPU
    return FAST_GPU_SMALL if name in SMALL_CONFIGS else FAST_GPU


WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "seven", "green", "market"]


def synthetic_data(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` alpaca records long enough to fill any bench sequence length after truncation."""
    import random

    rng = random.Random(seed)
    rows = [{"instruction": " ".join(rng.choices(WORDS, k=8)), "input": "", "output": " ".join(rng.choices(WORDS, k=2100))}
            for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bench_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer over the synthetic words (other words become <unk>): a few ids, so
    it fits every model's vocabulary (a real one need not: SmolLM2's ids pass Llama-2's 32,000),
    and needs neither the hub nor the embedded package. Speed does not depend on which ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            pad_token="</s>").save_pretrained(folder)
    return folder


def shape_seq(name: str, seq: int) -> int:
    """The sequence length ``name`` runs at: its own (a shape such as ``135m_lora_all_seq2048``)
    or the bench's ``seq``."""
    own = [o.split("=", 1)[1] for o in CONFIGS[name][0] if o.startswith("data.max_seq_len=")]
    return int(own[-1]) if own else seq


def bench_overrides(name: str, seq: int, steps: int, data_path: Path, tokenizer: Path) -> list[str]:
    """The run config both paths build from: random init, no eval, no logger, no accumulation."""
    shared, micro_batch = CONFIGS[name]
    own_seq = any(o.startswith("data.max_seq_len=") for o in shared)  # a shape of its own length
    return [*shared, "model.init=random", f"model.tokenizer={tokenizer}",
            "data=alpaca_file", f"data.path={data_path}", *([] if own_seq else [f"data.max_seq_len={seq}"]),
            "data.overlong=truncate",
            "data.train_on_prompt=true", f"data.train_size={micro_batch * steps}", "data.val_size=0", "data.test_size=0",
            f"trainer.micro_batch_size={micro_batch}", f"trainer.global_batch_size={micro_batch}",
            f"trainer.max_steps={steps}", "trainer.val_every_n_steps=null", "eval=none", "logger=none"]


# ------------------------------------------------------------------ one path, in its own process

def run_harness(overrides: list[str], warmup: int, work_dir: Path) -> dict:
    """The harness's own training path, exactly as ``python -m harness.run`` runs it."""
    from . import measure
    from .train import run_training

    run, resolved = compose(overrides)
    record = run_training(run, resolved, work_dir, warmup_steps=warmup)
    if record["status"] != "ok":
        raise RuntimeError(f"harness path failed: {record.get('error')}")
    estimate = record["memory_estimate"]["total_bytes"]
    return {"tokens_per_s": record.get("steady_tokens_per_s"), "step_seconds": record.get("steady_step_seconds"),
            "peak_allocated_gib": record.get("peak_gpu_allocated_gib"), "peak_reserved_gib": record.get("peak_gpu_reserved_gib"),
            "peak_rss_gib": record.get("peak_rss_gib"), "losses": record["train_losses"],
            "trainable_params": record["trainable_params"], "total_params": record["total_params"],
            "estimate_gib": round(estimate / measure.GIB, 3),
            # The estimate plans GPU memory; on a CPU there is no measured peak to hold it against.
            "estimate_over_measured": round(estimate / record["peak_gpu_allocated_bytes"], 3)
            if record.get("peak_gpu_allocated_bytes") else None}


def run_reference(overrides: list[str], warmup: int) -> dict:
    """The plain loop: transformers model, peft LoRA with default settings, torch AdamW."""
    import lightning as L
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from . import batches, data, measure, models
    from .estimate import resolve_precision
    from .train import pick_device

    run, _ = compose(overrides)
    device = pick_device(run.trainer.accelerator)
    precision = resolve_precision(run.trainer.precision, device, run.adapter.kind)
    tokenizer = models.load_tokenizer(run.model)
    splits, _ = data.build_splits(run.data, tokenizer)
    L.seed_everything(run.seed, workers=True, verbose=False)
    model = models.build_model(run.model, run.quant, precision, device)
    if run.quant.mode != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=run.adapter.r, lora_alpha=run.adapter.alpha, lora_dropout=run.adapter.dropout,
                      target_modules=run.adapter.target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=run.optimizer.lr,
                                  betas=tuple(run.optimizer.betas), eps=run.optimizer.eps,
                                  weight_decay=run.optimizer.weight_decay)
    module = batches.InstructionDataModule(splits, tokenizer.pad_token_id, run.trainer.micro_batch_size, run.seed)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    losses, tokens, started = [], 0, None
    for step, batch in enumerate(module.train_dataloader()):
        if step == warmup:
            sync()
            started, tokens = time.perf_counter(), 0
        tokens += batch["num_tokens"]
        loss = model(**{k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels")}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), run.trainer.max_grad_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    sync()
    seconds = time.perf_counter() - started
    steps = len(losses) - warmup
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    snap = measure.memory_snapshot(device)
    return {"tokens_per_s": round(tokens / seconds, 2), "step_seconds": round(seconds / steps, 5),
            "peak_allocated_gib": snap.get("peak_gpu_allocated_gib"), "peak_reserved_gib": snap.get("peak_gpu_reserved_gib"),
            "peak_rss_gib": snap["peak_rss_gib"], "losses": losses, "trainable_params": trainable,
            "total_params": sum(p.numel() for p in model.parameters())}


def one(args) -> None:
    overrides = json.loads(args.overrides)
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        result = run_reference(overrides, args.warmup) if args.path == "reference" else run_harness(overrides, args.warmup, Path(work))
    Path(args.result).write_text(json.dumps(result))


# ------------------------------------------------------------------ the driver

def one_process(path: str, overrides: list[str], warmup: int, result: Path) -> list[str]:
    """The command that runs one path of one configuration in its own process (``--one``)."""
    return [sys.executable, "-m", "harness.bench", "--one", "--path", path, "--overrides", json.dumps(overrides),
            "--warmup", str(warmup), "--result", str(result)]


def mfu(result: dict, overrides: list[str], seq: int) -> float | None:
    from . import measure, models

    peak = measure.gpu_peak_flops()
    if not peak or not result.get("tokens_per_s"):
        return None
    run, _ = compose(overrides)
    arch = models.load_config(run.model)
    per_token = measure.train_flops_per_token(result["total_params"], result["trainable_params"],
                                              arch.num_hidden_layers, arch.hidden_size, seq)
    return round(per_token * result["tokens_per_s"] / peak, 4)


def bench(names: list[str], seq: int, steps: int, warmup: int, work: Path, paths: list[str] = PATHS,
          harness_overrides: list[str] | None = None, logs: Path | None = None, out: Path | None = None) -> list[dict]:
    """Run every configuration through each path, one process each; returns one row per run.
    ``harness_overrides`` (speed switches; None: :func:`switches_for`) go to the harness path
    only; ``logs`` keeps each process's stderr; ``out`` is rewritten after every run, so a cut-off bench keeps its rows."""
    rows = []
    tokenizer = bench_tokenizer(work / "tokenizer")
    for name in names:
        data_path = synthetic_data(work / f"{name}.jsonl", CONFIGS[name][1] * (steps + warmup))
        overrides = bench_overrides(name, seq, steps + warmup, data_path, tokenizer)
        for path in paths:
            result = work / f"{name}-{path}.json"
            switches = switches_for(name, harness_overrides)
            run_overrides = [*overrides, *switches] if path == "harness" else overrides
            cmd = one_process(path, run_overrides, warmup, result)
            print(f"[bench] {name} / {path} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
            if logs:
                (logs / f"{name}-{path}.log").write_text(proc.stderr)
            row = {"config": name, "path": path, "seq": shape_seq(name, seq), "micro_batch": CONFIGS[name][1], "steps": steps,
                   "switches": switches if path == "harness" else [],
                   "process_seconds": round(time.perf_counter() - started, 1)}
            if proc.returncode != 0 or not result.is_file():
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                row.update(status="failed", error=tail[:300])
            else:
                row.update(status="ok", **json.loads(result.read_text()))
                row["mfu"] = mfu(row, overrides, shape_seq(name, seq))
            rows.append(row)
            print(f"[bench] {name} / {path}: {row['status']} {row.get('tokens_per_s') or row.get('error')} tokens/s, "
                  f"peak {row.get('peak_allocated_gib')} GiB, {row['process_seconds']} s", file=sys.stderr, flush=True)
            if out:
                out.write_text(json.dumps({"rows": rows, "ratios": ratios(rows)}, indent=2))
    return rows


def shape_overrides(name: str, seq: int, steps: int, work: Path) -> list[str]:
    """The run config of one bench shape, with its tokenizer and data written under ``work``."""
    tokenizer = bench_tokenizer(work / "tokenizer")
    data_path = synthetic_data(work / f"{name}.jsonl", CONFIGS[name][1] * steps)
    return bench_overrides(name, seq, steps, data_path, tokenizer)


def plain_trials(name: str, overrides: list[str], work: Path, n: int) -> list[dict]:
    """``n`` plain-loop trials of one shape (its :func:`shape_overrides`) one after another, each
    its own process as a plain script is run (issue 23's reference: no scoring): each one's wall
    seconds, start-up included, and its result (tokens/s, peaks, losses)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    trials = []
    for i in range(n):
        print(f"[bench] {name}: plain-loop trial {i + 1}/{n} ...", file=sys.stderr, flush=True)
        result = work / f"reference-{name}-{i}.json"
        started = time.perf_counter()
        proc = subprocess.run(one_process("reference", overrides, 1, result), capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"plain-loop trial failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
        trials.append({"wall_seconds": time.perf_counter() - started, **json.loads(result.read_text())})
    return trials


def sweep_throughput(name: str, seq: int, steps: int, work: Path, trials: int, trials_per_gpu: int,
                     reference_trials: int, harness_overrides: list[str] | None = None, logs: Path | None = None) -> dict:
    """Trials per hour, wall clock: ``reference_trials`` plain-loop trials one after another (each
    its own process, as a plain script is run) against one harness sweep of ``trials`` trials of
    the same shape and steps (different seeds), ``trials_per_gpu`` at a time."""
    overrides = shape_overrides(name, seq, steps, work)
    harness_overrides = switches_for(name, harness_overrides)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    walls = [t["wall_seconds"] for t in plain_trials(name, overrides, work, reference_trials)]
    sweep_dir = work / "sweep"
    cmd = [sys.executable, "-m", "harness.run", "+sweep=custom", "sweep.name=bench_throughput",
           f"+sweep.space.seed=[{','.join(str(i) for i in range(trials))}]", f"sweep.trials_per_gpu={trials_per_gpu}",
           "sweep.objectives=[{metric: train_loss_last, direction: minimize}]", *overrides, *harness_overrides,
           f"hydra.sweep.dir={sweep_dir}"]
    print(f"[bench] {name}: harness sweep of {trials} trials, {trials_per_gpu} per GPU ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    sweep_seconds = time.perf_counter() - started
    if logs:
        (logs / f"{name}-sweep.log").write_text(proc.stderr)
    records = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("trials/*/record.json"))]
    done = [r for r in records if r.get("status") == "ok"]
    # --reference-trials 0: the sweep alone (its ratio against a plain trial timed in another run).
    reference_per_hour = 3600 / statistics.mean(walls) if walls else None
    harness_per_hour = len(done) * 3600 / sweep_seconds
    return {"config": name, "seq": seq, "steps": steps, "switches": list(harness_overrides),
            "reference_trials": reference_trials, "reference_trial_seconds": [round(w, 1) for w in walls],
            "reference_trials_per_hour": round(reference_per_hour, 1) if reference_per_hour else None,
            "trials": trials, "trials_per_gpu": trials_per_gpu, "trials_ok": len(done),
            "sweep_seconds": round(sweep_seconds, 1), "sweep_exit_code": proc.returncode,
            "harness_trial_seconds": [round(r["total_seconds"], 1) for r in done],
            # Where each trial's time went, besides training: imports before its clock, then set-up.
            "harness_trial_startup_seconds": [round(r.get("startup_seconds") or 0, 1) for r in done],
            "harness_trial_setup_seconds": [round(r.get("setup_seconds") or 0, 1) for r in done],
            "harness_trial_train_seconds": [round(r.get("train_seconds") or 0, 1) for r in done],
            "harness_tokens_per_s": [r.get("tokens_per_s") for r in done],
            "harness_trials_per_hour": round(harness_per_hour, 1),
            "trials_per_hour_harness_over_reference": round(harness_per_hour / reference_per_hour, 2) if reference_per_hour else None}


def _ratio(own: dict, ref: dict, key: str) -> float | None:
    return round(own[key] / ref[key], 3) if own.get(key) and ref.get(key) else None


def ratios(rows: list[dict]) -> list[dict]:
    """harness / reference per configuration: speed, memory, and the first-step loss gap."""
    out = []
    by = {(r["config"], r["path"]): r for r in rows if r["status"] == "ok"}
    for name in dict.fromkeys(r["config"] for r in rows):
        ref, own = by.get((name, "reference")), by.get((name, "harness"))
        if not (ref and own):
            continue
        out.append({"config": name, "tokens_per_s": _ratio(own, ref, "tokens_per_s"),
                    "peak_allocated": _ratio(own, ref, "peak_allocated_gib"),
                    "peak_reserved": _ratio(own, ref, "peak_reserved_gib"),
                    "first_loss_gap": abs(own["losses"][0] - ref["losses"][0])})
    return out


def table(rows: list[dict], gains: list[dict]) -> str:
    lines = ["| config | path | tokens/s | step s | peak alloc GiB | peak reserved GiB | MFU | first loss | estimate GiB (/measured) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['config']} | {r['path']} | failed: {r['error']} | | | | | | |")
            continue
        estimate = f"{r['estimate_gib']} ({r['estimate_over_measured'] or '-'})" if r.get("estimate_gib") else "-"
        lines.append(f"| {r['config']} | {r['path']} | {r['tokens_per_s']:,.0f} | {r['step_seconds']:.4f} | "
                     f"{r['peak_allocated_gib'] or '-'} | {r['peak_reserved_gib'] or '-'} | {r['mfu'] or '-'} | "
                     f"{r['losses'][0]:.4f} | {estimate} |")
    lines += ["", "| config | tokens/s harness/reference | peak alloc harness/reference | first-step loss gap |", "|---|---|---|---|"]
    lines += [f"| {g['config']} | {g['tokens_per_s']} | {g['peak_allocated'] or '-'} | {g['first_loss_gap']:.2e} |" for g in gains]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                        help=f"any of: {', '.join(CONFIGS)}; 'estimate' = the 7B shapes for checking the memory estimate")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--harness-overrides", nargs="*", default=None,
                        help=f"speed switches for the harness path (default on a GPU: {' '.join(FAST_GPU)}, plus "
                             f"{FAST_GPU_SMALL[-1]} for {', '.join(SMALL_CONFIGS)}; on a CPU: {' '.join(FAST_CPU)})")
    parser.add_argument("--logs", type=Path, help="keep each process's stderr in this folder")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    parser.add_argument("--sweep-trials", type=int, default=0,
                        help="measure trials per hour of a harness sweep of this many trials vs the plain loop")
    parser.add_argument("--trials-per-gpu", type=int, default=12,
                        help="with --sweep-trials: the sweep's trials at a time (12 met the 6x goal on an H100 for the 135M shape)")
    parser.add_argument("--reference-trials", type=int, default=2, help="with --sweep-trials: plain-loop trials timed")
    parser.add_argument("--plain-trials", type=int, default=0,
                        help="time this many plain-loop trials of each config alone (each its own process, "
                             "start-up included; the reference of python -m harness.report.throughput --plain-seconds)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        one(args)
        return 0
    args.configs = [c for n in args.configs for c in (ESTIMATE_CONFIGS if n == "estimate" else [n])]
    unknown = [n for n in args.configs if n not in CONFIGS]
    if unknown:
        parser.error(f"--configs: unknown {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    if args.steps < 1 or args.warmup < 1 or args.seq < 8:
        parser.error("--steps and --warmup must be >= 1 and --seq >= 8")
    if args.plain_trials < 0 or args.sweep_trials < 0:
        parser.error("--plain-trials and --sweep-trials must be >= 0")
    if args.plain_trials and args.sweep_trials:
        parser.error("--plain-trials times plain trials alone; --sweep-trials times them against a sweep: give one")
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as work:
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
        for name in args.configs:
            print(f"[bench] {name}: harness switches {' '.join(switches_for(name, args.harness_overrides)) or 'none'}",
                  file=sys.stderr)
        if args.plain_trials:
            results = {name: plain_trials(name, shape_overrides(name, args.seq, args.steps, Path(work)), Path(work),
                                          args.plain_trials) for name in args.configs}
            args.out.write_text(json.dumps({"plain_trials": results}, indent=2))
            for name, trials in results.items():
                walls = " ".join(f"{t['wall_seconds']:.1f}" for t in trials)
                print(f"{name}: plain-loop trial wall seconds {walls}")
            return 0
        if args.sweep_trials:
            results = []
            for name in args.configs:
                results.append(sweep_throughput(name, args.seq, args.steps, Path(work), args.sweep_trials, args.trials_per_gpu,
                                                args.reference_trials, args.harness_overrides, args.logs))
                args.out.write_text(json.dumps({"sweeps": results}, indent=2))
            print(json.dumps(results, indent=2))
            return 0 if all(r["trials_ok"] == r["trials"] for r in results) else 1
        rows = bench(args.configs, args.seq, args.steps, args.warmup, Path(work), args.paths, args.harness_overrides,
                     args.logs, args.out)
    gains = ratios(rows)  # bench() has written rows and ratios to --out after every run
    print(table(rows, gains))
    print(f"[bench] wrote {args.out}", file=sys.stderr)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
