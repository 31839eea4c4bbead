#!/usr/bin/env bash
# Call 1 of the ledger's block of 2026-12-07 19:30 (no embedded model needed: the tiny model's GPU
# tests with the carried tokenizer, and random-init 135M packs). Run after `source .gpu/k1/env.sh .gpu/k1`.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# 1. Scoring by a token budget hands each batch's memory back; scoring still waits on the device
#    once per request list; released CUDA graphs hand their pools back (the amended test; the
#    compiled paths that release them, GPU_K="released or cuda_graphs_keep or compiled_pack_replays",
#    passed at 19:01).
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_evaluate.py \
  -k "hand_their_memory or waits_on_the_gpu" > $OUT/gpu_tests_call1.txt 2>&1; tail -3 $OUT/gpu_tests_call1.txt
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py \
  -k "${GPU_K:-released}" > $OUT/gpu_tests_call1b.txt 2>&1; tail -3 $OUT/gpu_tests_call1b.txt
# 2. Scoring A/B with the probes' real requests (the embedded tokenizer): batches of 16 against
#    an 8,192-token budget, five random-init 135M adapters scored jointly on an idle GPU, each
#    probe's first LIMIT documents (at 19:01 the whole probes took 150 s with the budget, and
#    more than 150 s without).
for B in 0 8192; do
  timeout 200 python3 -m harness.pack_bench --model smollm2_135m --trials 5 --precision bf16-true --repeats 1 --limit ${LIMIT:-150} \
    --score harness_agreement harness_capitals harness_add1d harness_arith_2ds --tokenizer /tmp/gpu/tok \
    $([ $B = 0 ] || echo --eval-batch-tokens $B) --out $OUT/score_ab_$B.json 2>&1 | grep -v Warn | tail -3
done
# 3. Which kernels hold a compiled pack of five's pass (PROFILE=0 skips).
[ "${PROFILE:-1}" = 0 ] || timeout 200 python3 docs/findings/experiments/profile_pack_2026-12-07.py \
  --out $OUT/profile_pack.json 2>&1 | grep -v Warn | tail -28
