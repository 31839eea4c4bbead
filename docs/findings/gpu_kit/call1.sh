#!/usr/bin/env bash
# Call 1 of the ledger's block of 2026-12-07 10:00 (no embedded model needed: random-init 135M
# packs and the CPU-sized dropout test). Run after `source .gpu/k1/env.sh .gpu/k1`.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# 1. A compiled pack group's one dropout draw under CUDA graphs (not yet run on a GPU)
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_compiled_dropout.py \
  > $OUT/gpu_tests_call1.txt 2>&1; tail -3 $OUT/gpu_tests_call1.txt
# 2. Compiled packs' warm-up and pass since the group's dropout is one draw, against 20.8 s / 48.3 s
#    warm-up and 42.80 / 64.21 trial-passes/s (one and four processes, H100, 2026-12-07)
X=docs/findings/experiments/mps_packs_2026-12-06.py
for P in 1 4; do
  timeout 200 python3 $X --procs $P --seq 512 --compile reduce-overhead --out $OUT/graphs_512_$P.json 2>&1 \
    | grep -v Warn | tail -1
done
# 3. This machine's plain HF+PEFT loop trials
bash /tmp/gpu/plain.sh
