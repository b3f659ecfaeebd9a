# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_SECONDS ?= 8
ECG_DATA   := .data/ecg
ECG_WHEELS := scipy==1.10.1 pyhrv==0.5.0 pyphysio==4.10.0 ecg-noise-detector==0.0.3

.PHONY: venv demo test test-all lint bench eval ecg-data clean

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

test: $(STAMP) $(ECG_DATA)/.stamp
	$(BIN)/python -m pytest -q

test-all: $(STAMP) $(ECG_DATA)/.stamp
	$(BIN)/python -m pytest -q -m ''

lint: $(STAMP)
	$(BIN)/ruff check stream engines devices tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.engine_latency
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.codec_link

eval: $(STAMP)
	$(BIN)/sigstream eval roi --json engines/roi/weights/roi_eval.json
	$(BIN)/sigstream eval codec --json engines/codec/weights/codec_eval.json
	$(BIN)/sigstream eval ct --json engines/ct/weights/ct_eval.json
	$(BIN)/sigstream eval pet --json engines/pet/weights/pet_eval.json

# Real ECG recordings that ship inside PyPI packages (shared/DATA.md; devices.ecg_recordings.REAL_RECORDINGS):
# download the pinned wheels (never installed), copy only the recordings into .data/ecg/.
# Platform-pinned so scipy 1.10.1's wheel exists whatever the local Python.
ecg-data: $(ECG_DATA)/.stamp

$(ECG_DATA)/.stamp: | $(STAMP)
	rm -rf $(ECG_DATA)/.wheels
	mkdir -p $(ECG_DATA)/.wheels
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
		--platform manylinux2014_x86_64 -d $(ECG_DATA)/.wheels $(ECG_WHEELS)
	$(BIN)/python -m devices.ecg_recordings extract $(ECG_DATA)/.wheels $(ECG_DATA)
	rm -rf $(ECG_DATA)/.wheels
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
