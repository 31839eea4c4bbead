"""Batched vs looped LoRA in a pack: the time of one packed forward and backward, each way.

    python -m harness.pack_bench                       # the tiny model, on this machine's device
    python -m harness.pack_bench --model smollm2_135m --trials 6 --micro-batch 8 --seq 512 \\
        --precision bf16-true --out pack_bench.json    # the 135M shape of the packed sweeps, on a GPU
    python -m harness.pack_bench --model smollm2_135m --trials 6 --micro-batch 4 --seq 512 \\
        --precision bf16-true --compile reduce-overhead --warmup 3  # compiled blocks, CUDA graphs
    python -m harness.pack_bench --model smollm2_135m --trials 6 --precision bf16-true \\
        --score harness_agreement harness_capitals harness_add1d harness_arith_2ds   # scoring: HFLM, alone, joint
        [--eval-batch-tokens 8192] [--tokenizer DIR]   # a token budget; the embedded model's tokenizer

Builds the base (random init: speed does not depend on the weights) with K LoRA adapters as a
pack builds them (:func:`harness.packed_lora.add_adapters`; ranks from ``--ranks`` in turn, alpha
2r, seeds 0..K-1) and times ``--steps`` passes (forward, the causal-LM loss, backward) of one
stacked micro-batch per trial, after ``--warmup``, three ways: ``solo`` (one trial's adapter and
micro-batch, as the trial alone: K of them one after another is what the pack replaces),
``looped`` and ``batched`` (the pack's two LoRA paths, :class:`harness.packed_lora.Router`).
``model`` times the whole model; ``layer`` one adapted linear alone (the first ``q_proj``), where
the LoRA terms are all that differs. No optimizer step: each trial's is its own either way. The
paths take turns ``--repeats`` times; each row holds the median. Prints a table, writes ``--out``.
With ``--compile MODE`` every path runs compiled decoder blocks, as a pack with ``trainer.compile``
trains (:func:`harness.pack_steps.compile_pack`).
With ``--score TASK ...`` it times scoring instead (:func:`bench_scoring`): the K adapters scored
one after another, by lm-eval's HFLM and as a run alone scores, against together
(:mod:`harness.pack_scoring`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from .compose import compose
from .pack_steps import compile_pack, convert_module, precision_context
from .packed_lora import BATCHED, LOOPED, Route, TrialRng, add_adapters, attach_router, lora_layers

PATHS = ("solo", LOOPED, BATCHED)


def build(args, k: int, device: str):
    """The random base with ``k`` adapters (routed), as a pack builds it; returns the model,
    its router and the adapter names."""
    from . import models

    shared = [f"model={args.model}", "model.init=random", f"adapter.targets={args.targets}",
              f"adapter.dropout={args.dropout}",
              *(["trainer.compile=true", f"trainer.compile_mode={args.compile}"] if args.compile else [])]
    runs = [compose([*shared, f"adapter.r={r}", f"adapter.alpha={2 * r}", f"seed={i}"])[0]
            for i, r in zip(range(k), itertools.cycle(args.ranks), strict=False)]
    torch.manual_seed(0)
    base = models.build_model(runs[0].model, runs[0].quant, args.precision, device)
    names = [f"trial{i}" for i in range(k)]
    model, _ = add_adapters(base, runs, names, None)
    router = attach_router(model)
    model = convert_module(model, args.precision).to(device)
    if args.compile:
        compile_pack(model, k, runs[0].trainer)
    return model, router, names


def passes(model, router, names: list[str], args, device: str, scope: str):
    """One timed pass of ``scope`` (``model`` or ``layer``) over one micro-batch per adapter."""
    rows = args.micro_batch * len(names)
    # Compiled blocks draw dropout in the graph, at the stack's width (harness.pack_steps.compiled_routes).
    routes = [Route(name, i * args.micro_batch, (i + 1) * args.micro_batch, *((None, None) if args.compile else (TrialRng(i), args.seq)))
              for i, name in enumerate(names)]
    generator = torch.Generator().manual_seed(0)
    if scope == "model":
        ids = torch.randint(3, model.config.vocab_size, (rows, args.seq), generator=generator).to(device)
        mask = torch.ones_like(ids)

        def one():
            with precision_context(args.precision, device), router.route(routes):
                loss = model(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
        return one
    layer = next(m for name, m in model.named_modules() if name.endswith("q_proj") and m in lora_layers(model))
    weight = layer.base_layer.weight
    x = torch.randn(rows, args.seq, weight.shape[1], generator=generator).to(device=device, dtype=weight.dtype)

    def one_layer():
        with precision_context(args.precision, device), router.route(routes):
            out = layer(x)
        out.float().sum().backward()
        model.zero_grad(set_to_none=True)
    return one_layer


def seconds_per_pass(one, steps: int, warmup: int, device: str) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        one()
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        one()
    sync()
    return (time.perf_counter() - started) / steps


def bench(args) -> dict:
    """Every (scope, path) timed ``args.repeats`` times in turn; the rows and the speed-ups."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    solo, pack = build(args, 1, device), build(args, args.trials, device)
    times: dict[tuple[str, str], list[float]] = {}
    terms = {}
    for _ in range(args.repeats):
        for scope, path in itertools.product(("model", "layer"), PATHS):
            model, router, names = solo if path == "solo" else pack
            router.batched = path == BATCHED
            before = dict(router.terms)
            one = passes(model, router, names, args, device, scope)
            times.setdefault((scope, path), []).append(seconds_per_pass(one, args.steps, args.warmup, device))
            terms[(scope, path)] = {p: router.terms[p] - before[p] for p in before}
    rows = []
    for (scope, path), seconds in times.items():
        trials = 1 if path == "solo" else args.trials
        median = statistics.median(seconds)
        rows.append({"scope": scope, "path": path, "trials": trials, "seconds_per_pass": round(median, 6),
                     "seconds_all": [round(s, 6) for s in seconds],
                     "tokens_per_s": round(trials * args.micro_batch * args.seq / median, 1),
                     "lora_terms_last_repeat": terms[(scope, path)]})
    by = {(r["scope"], r["path"]): r["seconds_per_pass"] for r in rows}
    speedups = {scope: {"batched_over_looped": round(by[(scope, LOOPED)] / by[(scope, BATCHED)], 3),
                        "batched_pack_over_solo_trials": round(args.trials * by[(scope, "solo")] / by[(scope, BATCHED)], 3),
                        "looped_pack_over_solo_trials": round(args.trials * by[(scope, "solo")] / by[(scope, LOOPED)], 3)}
                for scope in ("model", "layer")}
    return {"device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
            "torch": torch.__version__, "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "rows": rows, "speedups": speedups}


def bench_scoring(args) -> dict:
    """The pack's K adapters scored by lm-eval on ``args.score`` tasks three ways, in turn
    ``args.repeats`` times: one after another by lm-eval's own HFLM (``hflm``: its loop waits on
    the device three times a request), one after another as a run alone scores
    (``alone``, as ``HARNESS_PACK_EVAL=alone``: :class:`harness.pack_scoring.BatchedLM`), and
    together (``joint``, :mod:`harness.pack_scoring`). The adapters' B weights are drawn (not
    peft's zeros), so each trial scores differently; the result says how far the other ways'
    scores are from HFLM's. The tokenizer is the bench's word tokenizer (no embedded model
    needed): the requests are the tasks', their token counts not the real tokenizer's."""
    import tempfile

    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from . import evaluate
    from .bench import bench_tokenizer
    from .pack_scoring import JointScores

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, router, names = build(args, args.trials, device)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))
    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:  # the probes' words are unknown to it: a task's contexts are one context, its requests a few rows
        with tempfile.TemporaryDirectory() as folder:
            tokenizer = AutoTokenizer.from_pretrained(bench_tokenizer(Path(folder)))

    def score(name: str, joint: JointScores | None, make_lm=None) -> dict:
        model.set_adapter(name)
        tokens = None if make_lm is HFLM else args.eval_batch_tokens  # HFLM cuts batch_size requests
        return evaluate.score(model, tokenizer, args.score, device=device, batch_size=args.eval_batch_size,
                              batch_tokens=tokens, limit=args.limit, make_lm=joint.lm(name) if joint else make_lm)

    def hflm() -> list[dict]:
        return [score(n, None, HFLM) for n in names]

    def alone() -> list[dict]:
        return [score(n, None) for n in names]

    forwards = [0]  # the last joint pass's stacked forwards

    def joint() -> list[dict]:
        shared = JointScores(router, names)  # a fresh store each time: every repeat runs its passes
        scored = [score(n, shared) for n in names]
        forwards[0] = shared.forwards
        return scored

    ways = {"hflm": hflm, "alone": alone, "joint": joint}
    score(names[0], None)  # lm-eval's imports and task index, outside the timing
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    scores = {}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(args.repeats):
        for way, run in ways.items():
            sync()
            started = time.perf_counter()
            scores[way] = run()
            sync()
            seconds[way].append(time.perf_counter() - started)

    def differ(way: str) -> float:
        return max(abs(a[task][metric]["value"] - j[task][metric]["value"])
                   for a, j in zip(scores["hflm"], scores[way], strict=True)
                   for task in a for metric in a[task] if a[task][metric]["value"] is not None)
    median = {way: statistics.median(times) for way, times in seconds.items()}
    return {"device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
            "torch": torch.__version__, "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "seconds": seconds, **{f"{way}_seconds": round(median[way], 3) for way in ways},
            "alone_speedup_over_hflm": round(median["hflm"] / median["alone"], 3),
            "joint_speedup": round(median["alone"] / median["joint"], 3), "joint_forwards": forwards[0],
            "largest_score_difference": {way: differ(way) for way in ("alone", "joint")}}


def table(result: dict) -> str:
    lines = ["| scope | path | trials | ms per pass (median) | tokens/s | LoRA terms batched / looped |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        t = r["lora_terms_last_repeat"]
        lines.append(f"| {r['scope']} | {r['path']} | {r['trials']} | {1000 * r['seconds_per_pass']:.2f} | "
                     f"{r['tokens_per_s']:,.0f} | {t[BATCHED]} / {t[LOOPED]} |")
    for scope, s in result["speedups"].items():
        lines.append(f"\n{scope}: batched/looped {s['batched_over_looped']}x; K solo passes over one pack pass: "
                     f"batched {s['batched_pack_over_solo_trials']}x, looped {s['looped_pack_over_solo_trials']}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.pack_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="a conf/model name (random init): tiny, smollm2_135m, ...")
    parser.add_argument("--trials", type=int, default=4, help="K: the pack's trials")
    parser.add_argument("--ranks", type=int, nargs="+", default=[8], help="the trials' ranks, in turn (padded to the largest)")
    parser.add_argument("--targets", default="all_linear")
    parser.add_argument("--dropout", type=float, default=0.0, help="each trial's LoRA dropout (drawn per trial either way)")
    parser.add_argument("--micro-batch", type=int, default=2, help="rows per trial")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--precision", default="32-true", help="32-true, bf16-true, bf16-mixed (as trainer.precision)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if there is one")
    parser.add_argument("--compile", choices=("default", "reduce-overhead"),
                        help="compile the decoder blocks (as trainer.compile with this compile_mode; warm-up "
                             "passes compile, so give --warmup 3 or more); LoRA terms are then not counted")
    parser.add_argument("--steps", type=int, default=10, help="timed passes per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--score", nargs="+", metavar="TASK",
                        help="time scoring instead: the K adapters on these lm-eval tasks, by HFLM, alone and together")
    parser.add_argument("--limit", type=int, help="with --score: documents per task")
    parser.add_argument("--eval-batch-size", type=int, default=16, help="with --score (as eval.batch_size)")
    parser.add_argument("--tokenizer",
                        help="with --score: a saved tokenizer (the embedded model's, e.g. from HARNESS_TEST_TOKENIZER); "
                             "the default word tokenizer makes each task's requests one context, a few rows")
    parser.add_argument("--eval-batch-tokens", type=int,
                        help="with --score: alone and joint batches by this token budget (as eval.batch_tokens)")
    parser.add_argument("--out", type=Path, default=Path("pack_bench.json"))
    args = parser.parse_args(argv)
    if args.trials < 2 or args.steps < 1 or args.warmup < 0 or args.repeats < 1 or min(args.ranks) < 1:
        parser.error("--trials must be >= 2, --steps, --repeats and --ranks >= 1, --warmup >= 0")
    if args.score and args.compile:
        parser.error("--compile times training passes; a pack scores with its blocks eager, so leave it out with --score")
    if args.score:
        from . import evaluate

        if evaluate.HELDOUT_TASK in args.score:
            parser.error(f"--score: {evaluate.HELDOUT_TASK} scores a run's own test split; choose other tasks")
        result = bench_scoring(args)
        differ = result["largest_score_difference"]
        summary = (f"hflm {result['hflm_seconds']} s, alone {result['alone_seconds']} s "
                   f"({result['alone_speedup_over_hflm']}x), joint {result['joint_seconds']} s ({result['joint_speedup']}x "
                   f"alone) for {args.trials} trials; largest score difference from hflm: alone {differ['alone']:.3g}, "
                   f"joint {differ['joint']:.3g}")
    else:
        result = bench(args)
        summary = table(result)
    args.out.write_text(json.dumps(result, indent=2))
    print(summary)
    print(f"[pack_bench] {result['device']}; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
