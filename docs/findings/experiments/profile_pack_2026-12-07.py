"""Where a compiled pack's pass spends its GPU time: the kernels of ten packed passes, by name.

    python profile_pack_2026-12-07.py --out profile_pack.json          # on a GPU; CPU for a dry run

Builds the pack ``mps_packs_2026-12-06.py`` times (a random-init SmolLM2-135M pack of five
trials, all targets, ranks 2..64 in turn, LoRA dropout 0.05, bf16-true, 4 x 512 tokens a trial,
blocks compiled with CUDA graphs), warms it up, then records ``--steps`` passes (forward, the
causal-LM loss, backward) under ``torch.profiler``. Writes the kernels' total device time by
name, largest first, with each one's share of the passes' wall time, and the top of the table.
Why: four such packs pass about 71 trial-passes a second on an H100 (14 ms a trial-pass), and 8x
the plain trials needs passes faster than that (docs/benchmarks.md, 2026-12-07 15:40); the
profile says which kernels hold the time (the lm_head and its 49,152-word logits, attention,
the LoRA terms, the norms) before choosing what to change.

Each pass takes the pack's own loss (``harness.pack_steps.trial_losses``) over rows whose first
``1 - --labelled`` of positions are masked as a prompt (the default data's stacks of five label
about 41% of their positions), once per ``--heads`` arm: ``full`` (the causal LM's head over every
position, as packs did before 2026-12-07 22:00; the batch goes in each pass, from pinned memory) and ``labelled`` (the head on the labelled
positions alone, ``harness.head_loss``). Each arm is timed without the profiler first. Run each
arm in its own process (``--heads labelled``, then ``--heads full``; ``gpu_kit/profile_arms.sh``):
the two call the decoder layers with other keyword arguments, so a second arm in the same
process recompiles the blocks, and on 2026-12-08 that arm's blocks replayed no CUDA graph
(``graph_launches_per_pass``: the profiler's ``cudaGraphLaunch`` calls a pass, two per block when
they replay).
"""

import argparse
import json
import time


def pack_pass(model, router, names, args, device, head: str):
    """One pass (forward, the pack's loss, backward) of ``head`` over one micro-batch a trial."""
    import torch

    from harness.batches import to_device
    from harness.head_loss import head_on_labels, labelled_positions
    from harness.pack_steps import precision_context, trial_losses
    from harness.packed_lora import Route, TrialRng

    assert head == "full" or head_on_labels(model), "this pack's head cannot run on labelled positions alone"
    rows = args.micro_batch * len(names)
    spans = [(i * args.micro_batch, (i + 1) * args.micro_batch, args.seq) for i in range(len(names))]
    # compiled blocks draw dropout in the graph (harness.pack_steps.compiled_routes)
    routes = [Route(name, s, e, *((None, None) if args.compile != "none" else (TrialRng(i), w)))
              for i, (name, (s, e, w)) in enumerate(zip(names, spans, strict=True))]
    ids = torch.randint(3, model.config.vocab_size, (rows, args.seq), generator=torch.Generator().manual_seed(0))
    prompts = torch.Generator().manual_seed(1)

    def masked() -> torch.Tensor:
        """Labels with each row's first positions masked as a prompt: the same share every pass,
        or with --vary-labels each row's own share, drawn each pass (as real batches: the head's
        tensors then take another size each pass)."""
        labels = ids.clone()
        for row in labels:
            share = args.labelled + (args.vary_labels * (2 * torch.rand((), generator=prompts).item() - 1))
            row[:round(args.seq * (1 - share))] = -100
        return labels

    labels = masked()

    def one():
        # as harness.pack_steps.packed_step: the batch and positions go in each pass, from pinned memory
        pass_labels = masked() if args.vary_labels else labels
        positions = labelled_positions(pass_labels, spans).to(device) if head == "labelled" else None
        host = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": pass_labels}
        batch = {k: to_device(v, device) for k, v in host.items()}
        with precision_context(args.precision, device), router.route(routes):
            losses = trial_losses(model, batch, spans, positions)
        sum(losses).backward()
        model.zero_grad(set_to_none=True)
    return one


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", default="reduce-overhead", help="'none' for eager blocks")
    parser.add_argument("--precision", default="bf16-true", help="32-true for a CPU without native bf16")
    parser.add_argument("--labelled", type=float, default=0.41, help="the share of each row's positions with a label")
    parser.add_argument("--vary-labels", type=float, default=0.0,
                        help="each row's labelled share drawn each pass within --labelled +- this")
    parser.add_argument("--heads", nargs="+", default=["full", "labelled"], choices=["full", "labelled"])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out")
    args = parser.parse_args()

    import torch
    from torch._dynamo.utils import counters
    from torch.profiler import ProfilerActivity, profile

    from harness.pack_bench import build

    device = "cuda" if torch.cuda.is_available() else "cpu"
    bench_args = argparse.Namespace(model="smollm2_135m", targets="all", dropout=0.05, ranks=[2, 4, 8, 16, 32, 64],
                                    precision=args.precision, compile=None if args.compile == "none" else args.compile,
                                    micro_batch=args.micro_batch, seq=args.seq)
    model, router, names = build(bench_args, args.trials, device)
    router.batched = True
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
           "settings": vars(args), "arms": {}}
    for head in args.heads:
        one = pack_pass(model, router, names, args, device, head)
        warm = time.perf_counter()
        for _ in range(3):
            one()
        sync()
        warmup_seconds = time.perf_counter() - warm
        started = time.perf_counter()
        for _ in range(args.steps):
            one()
        sync()
        unprofiled = time.perf_counter() - started
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with profile(activities=activities) as prof:
            started = time.perf_counter()
            for _ in range(args.steps):
                one()
            sync()
            wall = time.perf_counter() - started
        device_time = "device_time_total" if device == "cuda" else "cpu_time_total"
        rows = sorted(((e.key, getattr(e, device_time), e.count) for e in prof.key_averages()
                       if getattr(e, device_time) > 0), key=lambda r: -r[1])
        # CUDA graph replays: one launch per recorded block call (forward and backward); none means
        # the blocks ran their kernels one by one (cudagraph trees kept them in warm-up or skipped them)
        launches = sum(e.count for e in prof.key_averages() if e.key == "cudaGraphLaunch")
        kernels = [{"name": name[:160], "ms": round(us / 1000, 2), "calls": calls, "share_of_wall": round(us / 1e6 / wall, 4)}
                   for name, us, calls in rows[:200]]
        arm = {"warmup_seconds": round(warmup_seconds, 1), "ms_per_pass": round(1000 * unprofiled / args.steps, 2),
               "ms_per_pass_profiled": round(1000 * wall / args.steps, 2),
               "trial_passes_per_s": round(args.trials * args.steps / unprofiled, 2),
               "graph_launches_per_pass": launches / args.steps,
               "inductor_counters": {k: v for k, v in counters["inductor"].items() if "cudagraph" in k},
               "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
               "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if device == "cuda" else None,
               # the caching allocator's own counts: cudaMallocs, retries after freeing the cache,
               # and the most memory held in free pieces of split blocks (fragmentation)
               "allocator": {k: v for k, v in torch.cuda.memory_stats().items()
                             if k in ("num_device_alloc", "num_alloc_retries", "inactive_split_bytes.all.peak",
                                      "reserved_bytes.all.peak", "active_bytes.all.peak")} if device == "cuda" else None,
               "kernels": kernels}
        out["arms"][head] = arm
        print(f"-- head {head}")
        for k in kernels[:args.top]:
            print(f"{k['ms']:10.2f} ms {k['calls']:6d} calls {100 * k['share_of_wall']:6.1f}%  {k['name']}")
        print(json.dumps({"head": head, **{k: arm[k] for k in ("warmup_seconds", "ms_per_pass", "ms_per_pass_profiled",
                                                                "trial_passes_per_s", "graph_launches_per_pass", "inductor_counters",
                                                                "peak_allocated_gib", "peak_reserved_gib", "allocator")}}))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()  # (the reserved peak only falls if memory was handed back)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
