#!/usr/bin/env bash
# Call 1 of the ledger's block of 2026-12-07 06:40 (no embedded model needed: tiny-model GPU tests,
# random-init 135M packs). Run after `source .gpu/k1/env.sh .gpu/k1`.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# 1. GPU cases written and not yet run on a GPU: flex attention over packed rows (a95b02c), a
#    compiled pack reusing the driver's estimate (fdd498b)
timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/test_data.py \
  -k "flex or compiled_pack_replays" > $OUT/gpu_tests_call1.txt 2>&1; tail -4 $OUT/gpu_tests_call1.txt
# 2. Compiled packs (CUDA graphs) in four processes against the eager 45.49 trial-passes/s
X=docs/findings/experiments/mps_packs_2026-12-06.py
timeout 300 python3 $X --procs 4 --seq 512 --compile reduce-overhead --out $OUT/graphs_512_4.json 2>&1 \
  | grep -v Warn | tail -2
