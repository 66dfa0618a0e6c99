"""The solver registry: every method is registered by name in :data:`METHODS`.

A method is an instance of a stepper family (:class:`~physode.ode.methods.base.Method`
subclasses: explicit Runge–Kutta over a :class:`~physode.ode.methods.tableau.Tableau`,
Rosenbrock, symplectic) and declares its capabilities as attributes.
"""

from __future__ import annotations

from physode.errors import InvalidArgument
from physode.ode.methods.base import Method
from physode.ode.methods.explicit import EXPLICIT_METHODS
from physode.ode.methods.rosenbrock import ROSENBROCK_METHODS
from physode.ode.methods.symplectic import SYMPLECTIC_METHODS
from physode.ode.methods.tableau import Tableau

METHODS: dict[str, Method] = {**EXPLICIT_METHODS, **ROSENBROCK_METHODS, **SYMPLECTIC_METHODS}


def get_method(name: object) -> Method:
    """The registered method called ``name``; the error lists the known ones."""
    if isinstance(name, str) and name in METHODS:
        return METHODS[name]
    known = ", ".join(sorted(METHODS))
    raise InvalidArgument(f"unknown method {name!r}; known methods: {known}")


__all__ = ["METHODS", "Method", "Tableau", "get_method"]
