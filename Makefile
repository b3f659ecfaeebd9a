# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_SECONDS ?= 8

.PHONY: venv demo test test-all lint bench eval clean

venv: $(STAMP)

# torch==2.13.0 first: it is the local CPU build; any other spec would pull the CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,data,eval,dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/sigstream demo --seconds $(DEMO_SECONDS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

lint: $(STAMP)
	$(BIN)/ruff check stream engines devices tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/engine_latency.py
	$(BIN)/python bench/pipeline.py

eval: $(STAMP)
	$(BIN)/sigstream eval roi --json engines/weights/roi_eval.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
