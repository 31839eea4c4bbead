# The profile of docs/benchmarks.md "QLoRA runs forked on a GPU, and where an eager pack's pass goes"
# (one H100, 2026-12-06 14:29 UTC), as it ran, at commit 35afce8: `python pack_profile_h100_2026-12-06.py OUTDIR`
# from the repository root with the repository on PYTHONPATH. Where an eager pack's pass spends its time on
# the GPU (host against kernels), what each per-trial cost adds (the trials' own dropout streams, dropout
# itself), and whether swapping a trial's CUDA stream by reference draws the masks of the byte swap.
import argparse, contextlib, json, sys, time
import torch
from harness import pack_bench
from harness.packed_lora import Route, TrialRng

out = sys.argv[1]
res = {}

def args_for(dropout, seq=320, mb=8):
    return argparse.Namespace(model="smollm2_135m", targets="all", dropout=dropout, ranks=[2, 4, 8, 16, 32, 64],
                              precision="bf16-true", compile=None, micro_batch=mb, seq=seq)

def timed(one, n=8):
    for _ in range(3): one()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(n): one()
    torch.cuda.synchronize(); return (time.perf_counter() - t) / n

def kernel_ms(one, n=3):
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n): one()
        torch.cuda.synchronize()
    ka = prof.key_averages()
    cuda = sum(getattr(e, "self_device_time_total", 0) for e in ka) / n / 1000
    top = sorted(ka, key=lambda e: e.self_cpu_time_total, reverse=True)[:20]
    return cuda, [(e.key, e.count // n, round(e.self_cpu_time_total / n / 1000, 2)) for e in top]

class Graphsafe:
    """A trial's CUDA stream swapped by pointer (graphsafe_set_state), not by copying bytes."""
    def __init__(self, seed):
        g = torch.cuda.default_generators[torch.cuda.current_device()]
        saved = g.clone_state(); torch.manual_seed(seed)
        self.state = g.clone_state(); g.graphsafe_set_state(saved)
    @contextlib.contextmanager
    def active(self, device):
        g = torch.cuda.default_generators[device.index or 0]
        saved = g.graphsafe_get_state(); g.graphsafe_set_state(self.state)
        try: yield
        finally: g.graphsafe_set_state(saved)

# do graph-safe swaps draw the same masks as byte swaps? one layer's dropout, 3 draws per stream
try:
    drop = torch.nn.Dropout(0.1)
    x = torch.ones(4, 64, 576, device="cuda", dtype=torch.bfloat16)
    a_rng, b_rng = TrialRng(7), Graphsafe(7)
    same = []
    for _ in range(3):
        with a_rng.active(x.device): ma = drop(x)
        torch.rand(1000, device="cuda")  # the global stream moves between draws
        with b_rng.active(x.device): mb = drop(x)
        same.append(bool(torch.equal(ma, mb)))
    res["graphsafe_same_masks"] = same
    res["graphsafe_same_state_after"] = bool(torch.equal(a_rng.cuda, b_rng.state.get_state()))
    print("graphsafe masks equal:", same, "state equal:", res["graphsafe_same_state_after"], flush=True)
except Exception as e:
    print("graphsafe check failed:", repr(e), flush=True)

for k in (1, 6):
    for dropout in (0.05, 0.0):
        a = args_for(dropout)
        model, router, names = pack_bench.build(a, k, "cuda")
        one = pack_bench.passes(model, router, names, a, "cuda", "model")
        key = f"k{k}_p{dropout}"
        res[key + "_wall_ms"] = round(timed(one) * 1000, 1)
        cuda, top = kernel_ms(one)
        res[key + "_kernel_ms"] = round(cuda, 1); res[key + "_top_cpu"] = top
        if k == 6 and dropout > 0:
            orig = TrialRng.active
            TrialRng.active = lambda self, device: contextlib.nullcontext()
            res[key + "_no_stream_swap_wall_ms"] = round(timed(one) * 1000, 1)
            TrialRng.active = orig
            try:
                streams = {n: Graphsafe(i) for i, n in enumerate(names)}
                ids = torch.randint(3, model.config.vocab_size, (a.micro_batch * k, a.seq)).cuda(); mask = torch.ones_like(ids)
                routes = [Route(n, i * a.micro_batch, (i + 1) * a.micro_batch, streams[n], a.seq) for i, n in enumerate(names)]
                def gs():
                    with pack_bench.precision_context(a.precision, "cuda"), router.route(routes):
                        loss = model(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False).loss
                    loss.backward(); model.zero_grad(set_to_none=True)
                res[key + "_graphsafe_wall_ms"] = round(timed(gs) * 1000, 1)
            except Exception as e:
                print("graphsafe timing failed:", repr(e), flush=True)
        print({kk: v for kk, v in res.items() if kk.startswith(key) and "top" not in kk}, flush=True)
        del model, router; torch.cuda.empty_cache()

json.dump(res, open(f"{out}/profile.json", "w"), indent=1)
for k, v in res.items():
    if "top" in k: print(k, *v, sep="\n  ")
