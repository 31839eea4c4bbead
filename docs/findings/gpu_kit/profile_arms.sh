#!/usr/bin/env bash
# The profile's heads, each arm in its own process (a second arm in one process recompiles the
# blocks and, on 2026-12-08, replayed no CUDA graph): the labelled head with the same labels every
# pass, with each row's labelled share drawn each pass (0.41 +- 0.15, as real batches: do the
# head's tensors of another size each pass fragment the allocator? packs with the labelled head
# reserved 1.6-3.4x what they allocated in `rag4`, 1.2x before; and with expandable segments),
# and the full head. No embedded model needed: `source .gpu/k0/env.sh .gpu/k0` (or k1), then `bash /tmp/gpu/profile_arms.sh`.
arm() {  # NAME ARGS...
  local name=$1; shift
  # torch's logs of recompiles and of CUDA graphs skipped (perf hints), the whole output in $OUT
  TORCH_LOGS=${TORCH_LOGS_ARMS:-recompiles,perf_hints,cudagraphs} timeout ${ARM_LIMIT:-100} \
    python3 docs/findings/experiments/profile_pack_2026-12-07.py "$@" --steps ${STEPS:-8} --top 14 \
    --out $OUT/profile_$name.json > $OUT/profile_$name.log 2>&1
  grep -v Warn $OUT/profile_$name.log | grep -i "^{\|^--\|skip\|recompil" | tail -12
}
arm labelled --heads labelled
arm labelled_varied --heads labelled --vary-labels 0.15
# the same with the allocator's expandable segments (one growing segment: no fragments between sizes)
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True arm labelled_varied_expandable --heads labelled --vary-labels 0.15
arm full --heads full
