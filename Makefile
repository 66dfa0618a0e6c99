# Each target bootstraps .venv itself: torch==2.13.0 first (the CPU wheel on these
# machines; a bare `torch` would pull a multi-GB CUDA build), then physode with its extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-slow demo bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check physode systems tests benchmarks examples
	$(PY) -m mypy
	$(PY) -m pytest -q -n 2

test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow

demo: $(STAMP)
	$(VENV)/bin/physode demo

bench: $(STAMP)
	$(PY) benchmarks/forward.py
	$(PY) benchmarks/gradients.py

lint: $(STAMP)
	$(PY) -m ruff check physode systems tests benchmarks examples
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
