"""The domain library: N-body gravity, pendulums and reaction kinetics, as named systems.

This package publishes itself to physode's registry through the ``physode.systems`` entry
point (``pyproject.toml``); physode imports every module in this folder on first use of the
registry, so adding a system is adding a file with a ``@register("name", "one line")``
class or factory. ``systems.get``, ``systems.available`` and ``systems.register`` are the
registry's own functions (:mod:`physode.model.registry`), re-exported here for convenience.
See ``systems/README.md``.
"""

from physode.model.registry import available, discover, get, register, resolve

__all__ = ["available", "discover", "get", "register", "resolve"]
