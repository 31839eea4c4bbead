#!/usr/bin/env bash
# The compiled pack's ceiling: the packs of padding_ab.sh compiled with CUDA graphs (every batch
# padded to data.max_seq_len = 512 there), one process and four, with what compiling and
# recording the graphs costs each process (warmup_seconds).
X=docs/findings/experiments/mps_packs_2026-12-06.py
for P in 1 4; do
  timeout 240 python3 $X --procs $P --seq 512 --compile reduce-overhead --out $OUT/graphs_512_$P.json 2>&1 | grep -v Warn | tail -1
done
