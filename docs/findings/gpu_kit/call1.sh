#!/usr/bin/env bash
# Call 1 of the ledger's block of 2026-12-07 (no embedded model needed: tiny-model GPU tests, the
# bench's word tokenizer, random-init 135M packs). Run after `source .gpu/k1/env.sh .gpu/k1`.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# 1. GPU cases not yet run on a GPU: trainer.graph_widths (47e6299), packed rows' attention (de80b99)
timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/test_data.py \
  -k "varying_widths or compiled_pack_replays or logits_and_the_loss" 2>&1 | tail -4
# 2. Scoring six adapters one after another (HFLM's loop: three waits on the GPU a request) against
#    together (joint scoring: one copy in and one out a batch since 2026-12-07), on the idle GPU
#    (2026-12-05, an H200: 25.6 s against 24.5 s; now also by lm-eval's HFLM, the loop BatchedLM replaced) and while three eager packs train beside it
#    (as in a sweep, where a pack's scoring took 52-64 s)
S="python3 -m harness.pack_bench --model smollm2_135m --trials 6 --precision bf16-true --repeats 1
   --score harness_agreement harness_capitals harness_add1d harness_arith_2ds"
timeout 150 $S --out $OUT/score_idle.json 2>&1 | grep -v Warn | tail -4
(date +%s; python3 docs/findings/experiments/mps_packs_2026-12-06.py --procs 3 --steps 250 \
  --out $OUT/score_beside_packs.json; date +%s) > $OUT/beside.log 2>&1 &
sleep 25; date +%s
timeout 240 $S --out $OUT/score_contended.json 2>&1 | grep -v Warn | tail -4
date +%s; wait; tail -2 $OUT/beside.log
# 3. Does a pack's pass time follow its tokens (eager)
PROCS=4 bash /tmp/gpu/padding_ab.sh
