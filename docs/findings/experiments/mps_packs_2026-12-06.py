"""Several eager packs on one GPU, each in its own process: do their kernels take turns, and does
the CUDA Multi-Process Service (MPS) let them overlap?

    python mps_packs_2026-12-06.py --procs 4 --out mps_off_4.json     # shell starts MPS or not

Each process builds a random-init SmolLM2-135M pack of K trials as ``harness.pack_bench`` does
(all targets, ranks 2..64 in turn, LoRA dropout 0.05, bf16-true), warms up, waits for the others,
then times N packed passes (forward, loss, backward) of one micro-batch per trial. The figure is
trial-passes per second over all processes (K x N x procs / the slowest process's time).
Whether MPS ran is up to the shell (``nvidia-cuda-mps-control -d`` before, ``echo quit |
nvidia-cuda-mps-control`` after); the script records what ``CUDA_MPS_PIPE_DIRECTORY`` said.
With ``--compile reduce-overhead`` each pack runs compiled blocks with CUDA graphs, as a pack
with ``trainer.compile`` trains, and each process records its warm-up (compiling and recording
the graphs) as ``warmup_seconds`` (added 2026-12-07; the default stays eager).
"""

import argparse
import json
import multiprocessing as mp
import os
import time


def worker(args, barrier, queue):
    import torch

    from harness.pack_bench import build, passes
    bench_args = argparse.Namespace(model="smollm2_135m", targets="all", dropout=0.05, ranks=[2, 4, 8, 16, 32, 64],
                                    precision="bf16-true", compile=args.compile, micro_batch=args.micro_batch, seq=args.seq)
    model, router, names = build(bench_args, args.trials, "cuda")
    router.batched = True
    one = passes(model, router, names, bench_args, "cuda", "model")
    warm = time.perf_counter()
    for _ in range(3):
        one()
    torch.cuda.synchronize()
    warmup_seconds = time.perf_counter() - warm
    barrier.wait()
    started = time.perf_counter()
    for _ in range(args.steps):
        one()
    torch.cuda.synchronize()
    queue.put({"seconds": time.perf_counter() - started, "warmup_seconds": round(warmup_seconds, 1), "max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=384)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compile", choices=("default", "reduce-overhead"))
    parser.add_argument("--out")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(args.procs), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(args, barrier, queue)) for _ in range(args.procs)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    slowest = max(r["seconds"] for r in results)
    out = {"settings": vars(args), "mps": bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY")), "per_process": results,
           "ms_per_pass_per_process": round(1000 * slowest / args.steps, 1),
           "trial_passes_per_s": round(args.procs * args.trials * args.steps / slowest, 2)}
    shown = {k: out[k] for k in ("mps", "ms_per_pass_per_process", "trial_passes_per_s")}
    shown["warmup_seconds_max"] = max(r["warmup_seconds"] for r in results)
    print(json.dumps(shown), args.procs, "procs", args.seq, "tokens", args.compile or "eager")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
