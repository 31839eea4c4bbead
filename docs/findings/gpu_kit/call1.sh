#!/usr/bin/env bash
# Call 1 of the ledger's block of 2026-12-08 01:40 (no embedded model needed; at most 4 x 100 s + 170 s). Run after
# `source .gpu/k1/env.sh .gpu/k1` (or .gpu/k0 when no model call follows).
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# 1. The profile's two heads, each in its own process: does the labelled head's pass replay the
#    blocks' CUDA graphs (graph_launches_per_pass 60), and what is its wall time then?
[ "${PROFILE:-1}" = 0 ] || bash /tmp/gpu/profile_arms.sh
# 2. The compiled pack's GPU test, which now counts the graphs' replays against their warm-ups.
timeout 170 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py \
  -k "${GPU_K:-compiled_pack_replays}" > $OUT/gpu_tests_call1.txt 2>&1
tail -3 $OUT/gpu_tests_call1.txt
