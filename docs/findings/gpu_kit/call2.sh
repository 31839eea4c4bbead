#!/usr/bin/env bash
# Call 2 of the ledger's block of 2026-12-07 22:10 brings the model's second part only
# (`source /tmp/gpu/env.sh .gpu/k2`); the sweep waits for the third (call 3).
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
