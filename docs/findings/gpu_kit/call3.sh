#!/usr/bin/env bash
# Call 3 of the ledger's block of 2026-12-07 18:50, once the model's third part is in
# (`source /tmp/gpu/env.sh .gpu/k3`): the compiled unpacked reference for `rag2` (three
# configurations x three seeds, one process a trial), with its CUDA graphs now released before
# scoring. Then, on the laptop: `python -m harness.report.compare rag2.tgz abc_alone.tgz`.
PACK=false bash /tmp/gpu/sweep.sh ${LIMIT:-560} ${WITHIN:-400} abc_alone trainer.compile=true \
  trainer.compile_mode=reduce-overhead 'sweep.space={adapter.r:[2,8,64],adapter.alpha_over_r:[1.0]}'
