#!/usr/bin/env bash
# Call 3 of the ledger's block of 2026-12-07 22:10, once the model's third part is in
# (`source /tmp/gpu/env.sh .gpu/k3`): this machine's plain HF+PEFT trials, then `rank_alpha`
# packed and compiled (`rag4`: packs by rank, the head on labelled positions), resumed in call 4
# (`bash /tmp/gpu/sweep.sh 560 420 rag4 ...` again) until 54 of 54.
bash /tmp/gpu/plain.sh
WORKERS=${WORKERS:-4} bash /tmp/gpu/sweep.sh ${LIMIT:-470} ${WITHIN:-330} rag4 trainer.compile=true \
  trainer.compile_mode=reduce-overhead
