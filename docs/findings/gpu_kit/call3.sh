#!/usr/bin/env bash
# Call 3 of the ledger's block of 2026-12-08 01:40, once the model's third part is in
# (`source /tmp/gpu/env.sh .gpu/k3`): this machine's plain HF+PEFT trials, then `rank_alpha`
# packed and compiled (study STUDY, default `rag5`), resumed in call 4
# (`WORKERS=4 bash /tmp/gpu/sweep.sh 500 380 rag5 trainer.compile=true trainer.compile_mode=reduce-overhead`)
# until 54 of 54.
bash /tmp/gpu/plain.sh
WORKERS=${WORKERS:-4} bash /tmp/gpu/sweep.sh ${LIMIT:-470} ${WITHIN:-330} ${STUDY:-rag5} trainer.compile=true \
  trainer.compile_mode=reduce-overhead
