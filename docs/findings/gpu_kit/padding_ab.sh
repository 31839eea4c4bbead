#!/usr/bin/env bash
# Does an eager pack's pass time follow its tokens? Packs of five trials (4 rows each) at 480
# tokens a row (a stacked batch padded to its longest row: 1.77x the real tokens of rank_alpha's
# data) and at 272 (the data's mean length: what a batch without padding would hold), one
# process alone and four at once (as a sweep's workers), with
# docs/findings/experiments/mps_packs_2026-12-06.py (MPS off).
X=docs/findings/experiments/mps_packs_2026-12-06.py
for S in 480 272; do for P in ${PROCS:-1 4}; do
  timeout 120 python3 $X --procs $P --seq $S --out $OUT/pad_${S}_$P.json 2>&1 | grep -v Warn | tail -1
done; done
