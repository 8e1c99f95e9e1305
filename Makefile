# maskjob: the two commands of the quick start are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench oracle clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## build a sample project and export it on a local Dask cluster
	$(VENV)/bin/maskjob demo demo-out

test: $(STAMP)  ## lint + the whole test suite (real moto S3 server, real Dask clusters)
	bash scripts/ensure-browser.sh
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)  ## benchmarks against the Supervisely SDK (builds a cached oracle venv)
	$(PY) benchmarks/run_all.py

oracle:  ## regenerate golden files with the real Supervisely SDK (cached venv)
	bash tests/oracles/run_supervisely_oracle.sh

clean:
	rm -rf demo-out demo-out-sample-project .pytest_cache .ruff_cache
