#!/usr/bin/env bash
# Call 2 of the ledger's block of 2026-12-07 18:50, while the model's second part comes in:
# which kernels hold a compiled pack of five's pass, and this machine's two plain HF+PEFT trials.
timeout 200 python3 docs/findings/experiments/profile_pack_2026-12-07.py \
  --out $OUT/profile_pack.json 2>&1 | grep -v Warn | tail -28
bash /tmp/gpu/plain.sh
