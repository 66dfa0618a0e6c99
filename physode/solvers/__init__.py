"""Solvers are data: every method is registered by name in :data:`METHODS`."""

from __future__ import annotations

from ..errors import InvalidArgument
from .base import Method
from .explicit import EXPLICIT_METHODS
from .rosenbrock import ROSENBROCK_METHODS
from .symplectic import SYMPLECTIC_METHODS
from .tableau import Tableau

METHODS: dict[str, Method] = {**EXPLICIT_METHODS, **ROSENBROCK_METHODS, **SYMPLECTIC_METHODS}


def get_method(name: str) -> Method:
    """The registered method called ``name``; the error lists the known ones."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(METHODS))
        raise InvalidArgument(f"unknown method {name!r}; known methods: {known}") from None


__all__ = ["METHODS", "Method", "Tableau", "get_method"]
