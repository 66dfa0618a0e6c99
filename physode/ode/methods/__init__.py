"""Solvers are data: every method is registered by name in :data:`METHODS`."""

from __future__ import annotations

from physode.errors import InvalidArgument
from physode.ode.methods.base import Method
from physode.ode.methods.explicit import EXPLICIT_METHODS
from physode.ode.methods.rosenbrock import ROSENBROCK_METHODS
from physode.ode.methods.symplectic import SYMPLECTIC_METHODS
from physode.ode.methods.tableau import Tableau

METHODS: dict[str, Method] = {**EXPLICIT_METHODS, **ROSENBROCK_METHODS, **SYMPLECTIC_METHODS}


def get_method(name: str) -> Method:
    """The registered method called ``name``; the error lists the known ones."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(METHODS))
        raise InvalidArgument(f"unknown method {name!r}; known methods: {known}") from None


__all__ = ["METHODS", "Method", "Tableau", "get_method"]
