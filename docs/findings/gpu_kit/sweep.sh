#!/usr/bin/env bash
# [SWEEP=rank_alpha] [WORKERS=4] [PACK=true] [MPS=1] bash sweep.sh LIMIT WITHIN STUDY [OVERRIDES...]
# Runs (or resumes, from this machine's outputs/ or /tmp/gpu/STUDY.tgz) a named sweep packed eager,
# stopped with SIGINT after LIMIT seconds, starting nothing after WITHIN (the driver samples the
# GPU's use into the study dir itself since 2026-12-08) and archives the dir to $OUT/STUDY.tgz
# (and /tmp/gpu, to resume).
# MPS=1 runs it under the CUDA Multi-Process Service (kernels of the packs' processes overlap).
LIMIT=$1 WITHIN=$2 STUDY=$3; shift 3
SWEEP=${SWEEP:-rank_alpha} WORKERS=${WORKERS:-4}
D=outputs/sweeps/$STUDY
mkdir -p outputs/sweeps
[ -d "$D" ] || [ ! -f /tmp/gpu/$STUDY.tgz ] || tar xzf /tmp/gpu/$STUDY.tgz -C outputs/sweeps
mkdir -p "$D"
T=$(date +%s)
if [ "${MPS:-0}" = 1 ]; then  # runs started after the daemon share the GPU through it
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mpslog
  mkdir -p /tmp/mps /tmp/mpslog; pgrep -f nvidia-cuda-mps-control >/dev/null || nvidia-cuda-mps-control -d
fi
timeout --signal=INT "$LIMIT" python3 -m harness.run +sweep=$SWEEP logger=none sweep.pack=${PACK:-true} \
  sweep.workers=$WORKERS sweep.start_within=$WITHIN sweep.study_name=$STUDY hydra.sweep.dir=$D "$@" \
  > "$D/driver.$T.log" 2>&1
RC=$?
[ "${MPS:-0}" = 1 ] && echo quit | nvidia-cuda-mps-control
echo "driver rc=$RC after $(( $(date +%s) - T )) s"
tail -4 "$D/driver.$T.log"
tar czf /tmp/gpu/$STUDY.tgz --exclude=adapter --exclude=heldout.jsonl --exclude=model -C outputs/sweeps $STUDY
# What comes back leaves out the pack states of interrupted trials (pack_state.pt: an r=64 trial's
# adapter and optimizer, about 0.2 GB; rag1's archive came to 2.9 GB): those trials train again
# from their start when a later session resumes; a later call on the same machine resumes them.
tar czf $OUT/$STUDY.tgz --exclude=adapter --exclude=heldout.jsonl --exclude=model --exclude='*.pt' -C outputs/sweeps $STUDY
ls "$D"/trials/*/seed_*/record.json 2>/dev/null | wc -l
