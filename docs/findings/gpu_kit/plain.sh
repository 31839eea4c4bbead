#!/usr/bin/env bash
# Two plain HF+PEFT loop trials of the rank_alpha shape: the reference for runs per hour on this machine.
python3 -m harness.bench --configs 135m_lora_all --steps 63 --plain-trials 2 --out $OUT/plain.json 2>&1 | tail -8
