# The count of docs/benchmarks.md "A pack's scaling in the term's dtype" (CPU, 2026-12-06): ops and bytes written per packed pass
# (pack of 6, 135M random weights, targets all, bf16-true, dropout 0.05, 1 x 32 per trial): `python pack_scale_count_2026-12-06.py`
import argparse, collections, json, sys, torch
from torch.utils._python_dispatch import TorchDispatchMode
from harness import pack_bench

VIEWS = {"view", "_unsafe_view", "reshape", "narrow", "slice", "transpose", "t", "expand", "permute", "unsqueeze",
         "squeeze", "split", "as_strided", "detach", "alias", "select", "split_with_sizes", "unbind"}

class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__(); self.ops = collections.Counter(); self.bytes = 0; self.f32 = 0; self.kind = collections.Counter()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        if name not in VIEWS:
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor):
                    self.bytes += t.numel() * t.element_size()
                    self.kind[(name, str(t.dtype))] += t.numel() * t.element_size()
        return out

args = argparse.Namespace(model="smollm2_135m", targets="all", dropout=0.05, ranks=[4, 64], precision="bf16-true",
                          compile=None, micro_batch=1, seq=32)
model, router, names = pack_bench.build(args, 6, "cpu")
router.batched = True
one = pack_bench.passes(model, router, names, args, "cpu", "model")
one()
with Count() as c:
    one()
res = {"ops": sum(c.ops.values()), "mb_written": round(c.bytes / 1e6, 1),
       "mul": c.ops["mul"], "mul_": c.ops["mul_"], "_to_copy": c.ops["_to_copy"],
       "top_bytes": [(k, round(v / 1e6, 1)) for k, v in c.kind.most_common(8)]}
print(json.dumps(res))
