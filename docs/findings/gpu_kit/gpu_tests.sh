#!/usr/bin/env bash
# The GPU-marked tests (they read the embedded model's tokenizer: run after the model is installed).
timeout ${1:-240} python3 -m pytest -q -p no:cacheprovider -m gpu tests/ > $OUT/gpu_tests.txt 2>&1; tail -12 $OUT/gpu_tests.txt
