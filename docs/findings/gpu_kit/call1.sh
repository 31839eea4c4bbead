#!/usr/bin/env bash
# Call 1 of the ledger's block of 2026-12-07 12:40 (no embedded model needed: random-init 135M
# packs and the CPU-sized dropout test). Run after `source .gpu/k1/env.sh .gpu/k1`.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# 1. A compiled pack group's one dropout draw under CUDA graphs (not yet run on a GPU)
#    and the scorer's one wait on the device per request list (not yet run on a GPU)
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_compiled_dropout.py \
  tests/test_evaluate.py::test_batched_scoring_waits_on_the_gpu_once_per_request_list \
  > $OUT/gpu_tests_call1.txt 2>&1; tail -3 $OUT/gpu_tests_call1.txt
# 2. Compiled packs' warm-up and pass, one and four processes, each first with an empty inductor
#    cache (against 20.8 s / 48.3 s warm-up and 42.80 / 64.21 trial-passes/s, H100, 2026-12-07
#    09:00, before the group's one dropout draw), four processes again over the cache their first run filled
#    (a later pack of a sweep: its trials' alphas and dropouts are held tensors, not constants).
X=docs/findings/experiments/mps_packs_2026-12-06.py
for P in ${PROCS:-4 1}; do  # PROCS=4 PLAIN=0: the short form; PROCS=none: no packs
  [ "$P" = none ] && continue
  export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor_$P
  for C in cold $([ $P = 4 ] && echo hot); do
    timeout 200 python3 $X --procs $P --seq 512 --compile reduce-overhead --out $OUT/graphs_512_${P}_$C.json 2>&1 \
      | grep -v Warn | tail -1
  done
done
unset TORCHINDUCTOR_CACHE_DIR
# 3. This machine's plain HF+PEFT loop trials
[ "${PLAIN:-1}" = 0 ] || bash /tmp/gpu/plain.sh
