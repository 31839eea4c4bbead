#!/usr/bin/env bash
# Call 1 of the ledger's block of 2026-12-07 16:05 (no embedded model needed: the tiny model's GPU
# tests with the carried tokenizer, and random-init 135M packs). Run after `source .gpu/k1/env.sh .gpu/k1`.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# 1. Scoring by a token budget hands each batch's memory back on a GPU (96b55e1, not yet run on a
#    GPU); scoring still waits on the device once per request list without a budget.
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_evaluate.py \
  -k "hand_their_memory or waits_on_the_gpu" > $OUT/gpu_tests_call1.txt 2>&1; tail -3 $OUT/gpu_tests_call1.txt
# 2. Which kernels hold a compiled pack of five's pass (14 ms a trial-pass in four processes).
[ "${PROFILE:-1}" = 0 ] || timeout 200 python3 docs/findings/experiments/profile_pack_2026-12-07.py \
  --out $OUT/profile_pack.json 2>&1 | grep -v Warn | tail -28
# 3. Compiled packs' warm-up and pass, four processes (PROCS="4 1" adds one alone; PROCS=none skips),
#    each first with an empty inductor cache, four again over the cache their first run filled.
X=docs/findings/experiments/mps_packs_2026-12-06.py
for P in ${PROCS:-none}; do
  [ "$P" = none ] && continue
  export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor_$P
  for C in cold $([ $P = 4 ] && echo hot); do
    timeout 200 python3 $X --procs $P --seq 512 --compile reduce-overhead --out $OUT/graphs_512_${P}_$C.json 2>&1 \
      | grep -v Warn | tail -1
  done
done
unset TORCHINDUCTOR_CACHE_DIR
# 4. This machine's plain HF+PEFT loop trials (PLAIN=0 skips; the sweeps' calls can time them instead)
[ "${PLAIN:-1}" = 0 ] || bash /tmp/gpu/plain.sh
