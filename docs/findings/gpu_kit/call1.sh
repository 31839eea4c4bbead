#!/usr/bin/env bash
# Call 1 of the ledger's block of 2026-12-07 22:10 (no embedded model needed: the tiny model's GPU
# tests with the carried tokenizer, and random-init 135M packs). Run after `source .gpu/k1/env.sh .gpu/k1`.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# 1. Released CUDA graphs hand their pools back (the test amended at 19:30, not yet re-run); the
#    compiled run alone and the compiled pack against eager, now that a pack's head runs on its
#    labelled positions alone (harness.head_loss).
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py \
  -k "${GPU_K:-released or cuda_graphs_keep or compiled_pack_replays}" > $OUT/gpu_tests_call1.txt 2>&1
tail -3 $OUT/gpu_tests_call1.txt
# 2. Which kernels hold a compiled pack of five's pass, with the head over every position and on
#    the labelled ones alone (41% of them, as the default data's stacks).
[ "${PROFILE:-1}" = 0 ] || timeout 300 python3 docs/findings/experiments/profile_pack_2026-12-07.py \
  --out $OUT/profile_pack.json --top 15 2>&1 | grep -v Warn | tail -40
