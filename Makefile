# Each target bootstraps .venv itself: torch==2.13.0 first (the CPU wheel on these
# machines; a bare `torch` would pull a multi-GB CUDA build), then physode with its extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-slow demo bench lint docs docs-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,bench,docs]'
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

# The documentation site, every example executed into the gallery (minutes).
docs: $(STAMP)
	PHYSODE_DOCS_EXECUTE=1 $(PY) -m sphinx -b html -W --keep-going -q docs docs/_build/html
	@echo "open docs/_build/html/index.html"

# What CI checks: the site builds with warnings as errors; examples rendered, not run.
docs-check: $(STAMP)
	$(PY) -m sphinx -b html -W --keep-going -q docs docs/_build/html

lint: $(STAMP)
	$(PY) -m ruff check physode systems tests benchmarks examples
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info docs/_build docs/auto_examples
