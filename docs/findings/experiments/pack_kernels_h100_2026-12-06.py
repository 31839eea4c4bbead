# The kernel breakdown of docs/benchmarks.md "`rank_alpha` packed eager against plain-loop trials" (one H100,
# 2026-12-06 17:40 UTC), as it ran at commit b171d6e: `python pack_kernels_h100_2026-12-06.py OUTDIR` writes OUTDIR/kernels.json.
# Which kernels an eager pass spends its GPU time in (one trial, a pack of 6): targets all (lm_head adapted, the
# sweeps'), dropout 0.05, bf16-true, micro-batch 8 x 320 per trial. CUDA activity only: with CPU activity on too,
# key_averages() gives each operator the device time of its kernels as well as the kernels theirs (counted twice).
import argparse, json, sys, time
import torch
from torch.profiler import profile, ProfilerActivity
from harness import pack_bench

out = sys.argv[1]; res = {}
for targets in ("all",):
    for k in (1, 6):
        a = argparse.Namespace(model="smollm2_135m", targets=targets, dropout=0.05, ranks=[2, 4, 8, 16, 32, 64],
                               precision="bf16-true", compile=None, micro_batch=8, seq=320)
        model, router, names = pack_bench.build(a, k, "cuda")
        one = pack_bench.passes(model, router, names, a, "cuda", "model")
        for _ in range(3): one()
        torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(6): one()
        torch.cuda.synchronize(); wall = (time.perf_counter() - t) / 6 * 1000
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(2): one()
            torch.cuda.synchronize()
        ka = prof.key_averages()
        total = sum(e.self_device_time_total for e in ka) / 2 / 1000
        top = sorted(ka, key=lambda e: e.self_device_time_total, reverse=True)[:18]
        key = f"{targets}_k{k}"
        res[key] = {"wall_ms": round(wall, 1), "kernel_ms": round(total, 1),
                    "top": [(e.key[:110], e.count // 2, round(e.self_device_time_total / 2 / 1000, 2)) for e in top]}
        print(key, "wall", round(wall, 1), "kernel", round(total, 1), flush=True)
        for row in res[key]["top"]: print("   ", row, flush=True)
        del model, router; torch.cuda.empty_cache()
json.dump(res, open(f"{out}/kernels.json", "w"), indent=1)
