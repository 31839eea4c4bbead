#!/usr/bin/env bash
# Call 1 of the ledger's block of 2026-12-07 (no embedded model needed: tiny-model GPU tests, the
# bench's word tokenizer, random-init 135M packs). Run after `source .gpu/k1/env.sh .gpu/k1`.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# 1. GPU cases not yet run on a GPU: trainer.graph_widths (47e6299), packed rows' attention (de80b99)
timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/test_data.py \
  -k "varying_widths or compiled_pack_replays or logits_and_the_loss" 2>&1 | tail -4
# 2. Scoring six adapters one after another (HFLM's loop: three waits on the GPU a request) against
#    together (joint scoring, one copy in and one out a batch since 2026-12-07); 2026-12-05 on an
#    H200: 25.6 s against 24.5 s
timeout 200 python3 -m harness.pack_bench --model smollm2_135m --trials 6 --precision bf16-true \
  --score harness_agreement harness_capitals harness_add1d harness_arith_2ds --repeats 2 \
  --out $OUT/pack_score.json 2>&1 | grep -v Warn | tail -6
# 3. Does a pack's pass time follow its tokens (eager), and the compiled pack's ceiling
bash /tmp/gpu/padding_ab.sh
