#!/usr/bin/env bash
# The profile's two heads, each arm in its own process (a second arm in one process recompiles
# the blocks and, on 2026-12-08, replayed no CUDA graph). No embedded model needed: carry a kit
# with the wheels and env.sh (`source .gpu/k0/env.sh .gpu/k0`), then `bash /tmp/gpu/profile_arms.sh`.
for h in labelled full; do
  timeout ${ARM_LIMIT:-150} python3 docs/findings/experiments/profile_pack_2026-12-07.py --heads $h \
    --steps ${STEPS:-8} --top 14 --out $OUT/profile_$h.json 2>&1 | grep -v Warn | tail -16
done
