# Two entry points do all set-up from a fresh clone: `make demo` and `make test` (everything: lint, types,
# every test tier). `make test-fast` is the unit tier alone: no real daemons or processes, nothing slow.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean install

# The C lane (src/strato/faas/live/_leanpath.c) is built by the editable install: rebuild when it changes.
$(STAMP): pyproject.toml src/strato/faas/live/_leanpath.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/strato demo --out strato-report

test: $(STAMP)
	scripts/system-deps.sh
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not system and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/run.py
	scripts/bench-deps.sh
	$(PY) benchmarks/live_bench.py --repeat 5
	$(PY) benchmarks/density_bench.py
	$(PY) benchmarks/llm_bench.py
	$(PY) benchmarks/monitor_bench.py
	$(PY) benchmarks/vm_bench.py
	$(PY) benchmarks/power_bench.py

clean:
	rm -rf $(VENV) strato-report .pytest_cache .mypy_cache .ruff_cache
