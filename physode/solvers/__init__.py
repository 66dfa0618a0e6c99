"""Solvers are data: every method is registered by name in :data:`METHODS`."""

from __future__ import annotations

from ..errors import InvalidArgument
from .explicit import EXPLICIT_METHODS
from .tableau import Tableau

METHODS: dict[str, Tableau] = dict(EXPLICIT_METHODS)


def get_method(name: str) -> Tableau:
    """The registered method called ``name``; the error lists the known ones."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(METHODS))
        raise InvalidArgument(f"unknown method {name!r}; known methods: {known}") from None


__all__ = ["METHODS", "Tableau", "get_method"]
