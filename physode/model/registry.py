"""The registry of named systems: ``register``, ``get``, ``available`` and plugin discovery.

``get("robertson", k1=0.05)`` returns a configured :class:`~physode.model.system.System`;
``available()`` lists the names with one-line descriptions. Names come from packages that
publish themselves under the ``physode.systems`` entry-point group (the plugin convention
of xarray backends and pytest plugins): the repository's ``systems/`` package does so in
``pyproject.toml``, and a user's installed package can do the same. Discovery imports every
public module of such a package, so a file dropped into ``systems/`` shows up without
editing any other file; physode itself never imports a systems package by name.

Where a name comes from decides how far it may reach: ``get`` and ``resolve`` accept a
``"package.module:Class"`` reference only when ``references=True`` (what the user typed: an
API argument, the command line); a name read from a data file is looked up in the registry
and never imported (``references=False``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, TypeVar

from physode.errors import InvalidSystem, UnknownSystem
from physode.model.system import System

T = TypeVar("T")

ENTRY_POINT_GROUP = "physode.systems"


@dataclass(frozen=True)
class Entry:
    """One registered system: the factory (a System subclass or a function returning one)."""

    name: str
    factory: Callable[..., System]
    description: str
    module: str


_REGISTRY: dict[str, Entry] = {}
_IMPORT_FAILURES: dict[str, str] = {}
_PLUGINS: dict[str, ModuleType] = {}
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


def _import(modname: str) -> ModuleType | None:
    try:
        module = importlib.import_module(modname)
    except Exception as exc:  # a user's broken file must not break the registry
        _IMPORT_FAILURES[modname] = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"physode systems: could not import {modname}: {exc}", stacklevel=3)
        return None
    _IMPORT_FAILURES.pop(modname, None)
    return module


def discover(force: bool = False) -> None:
    """Load every package published under the ``physode.systems`` entry points, and every
    public module inside it, so that their ``@register`` calls run (once; ``force`` scans
    again, e.g. after a file was added).

    A module that fails to import is skipped with a warning and named in the error for an
    unknown system, so one broken user file does not hide all the others.
    """
    global _discovered
    if _discovered and not force:
        return
    _discovered = True
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.value not in _PLUGINS:
            module = _import(ep.value)
            if module is None:
                continue
            _PLUGINS[ep.value] = module
    for plugin in list(_PLUGINS.values()):
        paths = getattr(plugin, "__path__", None)
        if paths is None:  # a plain module: importing it registered its systems
            continue
        for info in sorted(pkgutil.iter_modules(paths), key=lambda m: m.name):
            if not info.name.startswith("_"):
                _import(f"{plugin.__name__}.{info.name}")


def available() -> dict[str, str]:
    """``{name: one-line description}`` of every registered system, sorted by name."""
    discover()
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


def resolve(name: str, *, references: bool = True) -> Callable[..., System]:
    """The class or factory for a registry name, or (``references=True`` only) for a
    ``"package.module:Class"`` reference."""
    if not isinstance(name, str) or not name:
        raise UnknownSystem(f"system name must be a non-empty string, got {name!r}")
    if ":" in name:
        if not references:
            raise UnknownSystem(
                f"system {name!r} is a code reference; a name read from a file is looked up "
                f"in the registry only, never imported; known systems: {_known()}")
        return _load_reference(name)
    discover()
    entry = _REGISTRY.get(name)
    if entry is None:
        msg = f"unknown system {name!r}; known systems: {_known()}"
        if references:
            msg += "; or give 'package.module:Class'"
        if _IMPORT_FAILURES:
            msg += "; modules that failed to import: " + "; ".join(
                f"{m} ({e})" for m, e in sorted(_IMPORT_FAILURES.items())
            )
        raise UnknownSystem(msg)
    return entry.factory


def _known() -> str:
    discover()
    return ", ".join(sorted(_REGISTRY)) or "(none)"


def get(name: str, *, references: bool = True, **overrides: Any) -> System:
    """A configured instance of system ``name`` (registry name or ``"module:Class"``).

    Overrides that the class/factory accepts as keyword arguments go to it; the rest are
    applied with :meth:`physode.System.configure` (parameter values or declarations,
    ``y0``, ``t_span``, ``unknown_initial_state``).
    """
    factory = resolve(name, references=references)
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


__all__ = ["ENTRY_POINT_GROUP", "Entry", "available", "discover", "get", "register", "resolve"]
