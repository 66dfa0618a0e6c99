"""Fixtures of the PEtab tests: a private cache of generated model code for the session,
and the tiny problem (tiny_problem.py) written once per module."""

from __future__ import annotations

import pytest
import tiny_problem as tiny


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PHYSODE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def yaml_path(tmp_path_factory):
    return tiny.write(tmp_path_factory.mktemp("tiny"))
