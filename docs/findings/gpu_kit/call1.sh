#!/usr/bin/env bash
# Call 1 of the ledger's block of 2026-12-07 23:05 (no embedded model needed). Run after
# `source .gpu/k1/env.sh .gpu/k1`.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# 1. Which kernels hold a compiled pack of five's pass (rank_alpha's targets, the head adapted),
#    the head over every position against the labelled ones alone (41%, as the default data's stacks).
[ "${PROFILE:-1}" = 0 ] || timeout 220 python3 docs/findings/experiments/profile_pack_2026-12-07.py \
  --steps 8 --out $OUT/profile_pack.json --top 14 2>&1 | grep -v Warn | tail -34
# 2. The compiled pack against the eager one with a trial adapting the head (its terms on the
#    labelled positions, outside the graphs).
timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py \
  -k "${GPU_K:-compiled_pack_replays}" > $OUT/gpu_tests_call1.txt 2>&1
tail -3 $OUT/gpu_tests_call1.txt
