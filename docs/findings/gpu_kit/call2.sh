#!/usr/bin/env bash
# Call 2 of the ledger's block of 2026-12-07 06:40, while the model's second part comes in:
# one compiled pack alone (its warm-up), and this machine's two plain HF+PEFT loop trials.
X=docs/findings/experiments/mps_packs_2026-12-06.py
timeout 200 python3 $X --procs 1 --seq 512 --compile reduce-overhead --out $OUT/graphs_512_1.json 2>&1 \
  | grep -v Warn | tail -2
bash /tmp/gpu/plain.sh
