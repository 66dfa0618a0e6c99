"""The domain library and its registry of named systems.

``systems.get("robertson", k1=0.05)`` returns a configured :class:`physode.System` with its
reference initial state ``y0`` and time span ``t_span``; ``systems.available()`` lists the
names with one-line descriptions; ``systems.get("package.module:Class")`` loads a user's own
class (or a factory function returning a System). The command line and HDF5 files refer to
systems by these strings.

Adding a system is adding a file: every module in this package is imported on first use
(:func:`discover`), and a class or factory decorated with ``@register("name", "one line")``
appears in ``available()`` without editing any other file. See ``systems/README.md``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from physode.system import System
from physode.system_errors import InvalidSystem, UnknownSystem

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One registered system: the factory (a System subclass or a function returning one)."""

    name: str
    factory: Callable[..., System]
    description: str
    module: str


_REGISTRY: dict[str, Entry] = {}
_IMPORT_FAILURES: dict[str, str] = {}
_discovered = False


def register(name: str, description: str | None = None) -> Callable[[T], T]:
    """Decorator: register a System subclass (constructible without arguments) or a factory
    function ``f(**overrides) -> System`` under ``name``. The description defaults to the
    first line of the docstring."""
    if not isinstance(name, str) or not name or ":" in name or name != name.strip():
        raise InvalidSystem(f"registry name must be a non-empty string without ':', got {name!r}")

    def decorate(obj: T) -> T:
        if not callable(obj):
            raise InvalidSystem(f"@register({name!r}) needs a System subclass or a function")
        desc = description or _first_line(inspect.getdoc(obj)) or name
        module = getattr(obj, "__module__", "?")
        qualname = f"{module}.{getattr(obj, '__qualname__', repr(obj))}"
        old = _REGISTRY.get(name)
        if old is not None:
            old_qualname = f"{old.module}.{getattr(old.factory, '__qualname__', repr(old.factory))}"
            if old_qualname != qualname:
                raise InvalidSystem(
                    f"system name {name!r} registered twice: by {old_qualname} and by {qualname}"
                )
        _REGISTRY[name] = Entry(name, obj, desc, module)
        return obj

    return decorate


def discover(force: bool = False) -> None:
    """Import every module of this package once so their ``@register`` calls run.

    A module that fails to import is skipped with a warning (and named in the error for
    an unknown system), so one broken user file does not hide all the others.
    """
    global _discovered
    if _discovered and not force:
        return
    _discovered = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        modname = f"{__name__}.{info.name}"
        try:
            importlib.import_module(modname)
            _IMPORT_FAILURES.pop(modname, None)
        except Exception as exc:  # a user's broken file must not break the registry
            _IMPORT_FAILURES[modname] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"systems: could not import {modname}: {exc}", stacklevel=2)


def available() -> dict[str, str]:
    """``{name: one-line description}`` of every registered system, sorted by name."""
    discover()
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


def resolve(name: str) -> Callable[..., System]:
    """The class or factory for a registry name or a ``"package.module:Class"`` reference."""
    if not isinstance(name, str) or not name:
        raise UnknownSystem(f"system name must be a non-empty string, got {name!r}")
    if ":" in name:
        return _load_reference(name)
    discover()
    entry = _REGISTRY.get(name)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        msg = f"unknown system {name!r}; known systems: {known}; or give 'package.module:Class'"
        if _IMPORT_FAILURES:
            msg += "; modules that failed to import: " + "; ".join(
                f"{m} ({e})" for m, e in sorted(_IMPORT_FAILURES.items())
            )
        raise UnknownSystem(msg)
    return entry.factory


def get(name: str, **overrides: Any) -> System:
    """A configured instance of system ``name`` (registry name or ``"module:Class"``).

    Overrides that the class/factory accepts as keyword arguments go to it; the rest are
    applied with :meth:`physode.System.configure` (parameter values or declarations,
    ``y0``, ``t_span``, ``unknown_initial_state``).
    """
    factory = resolve(name)
    ctor_kwargs, rest = _split_kwargs(factory, overrides)
    system = factory(**ctor_kwargs)
    if not isinstance(system, System):
        raise UnknownSystem(
            f"{name!r} did not produce a physode.System but {type(system).__name__}"
        )
    if rest:
        system.configure(**rest)
    system.registry_name = name
    return system


def _split_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[dict, dict]:
    if not kwargs:
        return {}, {}
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return {}, dict(kwargs)
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs), {}
    accepted = {
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    ctor = {k: v for k, v in kwargs.items() if k in accepted}
    return ctor, {k: v for k, v in kwargs.items() if k not in accepted}


def _load_reference(ref: str) -> Callable[..., System]:
    modname, _, attr = ref.partition(":")
    if not modname or not attr:
        raise UnknownSystem(f"system reference {ref!r} must look like 'package.module:Class'")
    try:
        module = importlib.import_module(modname)
    except Exception as exc:
        raise UnknownSystem(
            f"cannot import module {modname!r} for system {ref!r}: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UnknownSystem(
                f"module {modname!r} has no attribute {attr!r} (system {ref!r})"
            ) from None
    if inspect.isclass(obj):
        if not issubclass(obj, System):
            raise UnknownSystem(f"{ref!r} is a class but not a physode.System subclass")
        return obj
    if callable(obj) and not isinstance(obj, System):
        return obj
    raise UnknownSystem(f"{ref!r} is not a physode.System subclass (got {type(obj).__name__})")


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""


__all__ = ["Entry", "available", "discover", "get", "register", "resolve"]
