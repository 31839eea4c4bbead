#!/usr/bin/env bash
# Four eager packs in four processes, without and with the CUDA Multi-Process Service, and one alone
# each way (docs/findings/experiments/mps_packs_2026-12-06.py). Leaves MPS stopped.
X=docs/findings/experiments/mps_packs_2026-12-06.py
for P in 1 4; do timeout 150 python3 $X --procs $P --out $OUT/mps_off_$P.json 2>&1 | grep -v Warn | tail -2; done
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mpslog
mkdir -p /tmp/mps /tmp/mpslog
if nvidia-cuda-mps-control -d; then
  for P in 1 4; do timeout 150 python3 $X --procs $P --out $OUT/mps_on_$P.json 2>&1 | grep -v Warn | tail -2; done
  echo quit | nvidia-cuda-mps-control
else echo "MPS: nvidia-cuda-mps-control did not start"; fi
