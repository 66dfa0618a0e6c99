"""The rules of the observations schema: constants, and the checks against a System's layout.

Everything here works on plain attributes (the :class:`ObservationsLike` and
:class:`ExperimentLike` protocols), so this module imports neither the dataclasses of
:mod:`physode.data.observations` nor the file code of :mod:`physode.data.hdf5`; both of
those use it. Each check returns location-bearing sentences (``file: group '...', dataset
'...': what is wrong``); :func:`raise_if` raises them as one
:class:`~physode.errors.InvalidObservations`.

A system name read from a file is resolved through the registry only
(``registry.get(name, references=False)``): a file can choose among the registered
systems, never make physode import a module (see :func:`resolve_system`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from physode.data.experiment_parts import parts_violations
from physode.errors import InvalidObservations, PhysodeError, UnknownSystem
from physode.model import registry
from physode.model.system import System
from physode.ode.times import times_problem

SCHEMA_NAME = "physode.observations"
SCHEMA_VERSION = 2
#: Root attributes with a meaning in the schema; every other root attribute is metadata.
RESERVED_ROOT_ATTRS = ("schema", "schema_version", "system", "creator")
#: Root attribute (metadata) with the JSON arguments that rebuild a system defined by data
#: (a reaction network from strings): written by ``simulate``, read by :func:`system_args`.
SYSTEM_ARGS_ATTR = "system_args"
#: Optional per-experiment groups, beside the required ``time`` and ``values``.
OPTIONAL_PARTS = ("mask", "sigma", "y0")


class ExperimentLike(Protocol):
    """What the checks read from an experiment."""

    t: np.ndarray
    t0: float | None
    name: str
    values: dict[str, np.ndarray]
    index: dict[str, dict[str, np.ndarray]]
    mask: dict[str, np.ndarray]
    sigma: dict[str, np.ndarray]
    y0: dict[str, np.ndarray] | None
    noise: dict[str, Any]
    conditions: dict[str, Any]
    dosing: list[Any]
    inputs: dict[str, Any]
    preequilibration: dict[str, Any] | None


class ObservationsLike(Protocol):
    """What the checks read from an observations object."""

    system: str
    schema_version: int
    units: dict[str, str]
    parameters: dict[str, np.ndarray]
    parameter_units: dict[str, str]

    @property
    def experiments(self) -> Sequence[ExperimentLike]: ...

    @property
    def variables(self) -> tuple[str, ...]: ...


def location(source: str, group: str, dataset: str | None = None) -> str:
    """``"file: group '/g'"`` or ``"file: group '/g', dataset 'd'"``."""
    text = f"{source}: group '{group}'"
    return text + (f", dataset '{dataset}'" if dataset is not None else "")


def system_label(system: System) -> str:
    """The name a file records for ``system``: its registry name, else ``module:Class``."""
    if system.registry_name:
        return system.registry_name
    cls = type(system)
    return f"{cls.__module__}:{cls.__qualname__}"


def system_args(obs: Any, source: str) -> dict[str, Any]:
    """The arguments that rebuild the system a file names (root attribute
    :data:`SYSTEM_ARGS_ATTR`, JSON text of an object; ``{}`` when absent). JSON decodes to
    data only (str, numbers, lists, dicts): a file can configure a registered system,
    never run code."""
    raw = getattr(obs, "metadata", {}).get(SYSTEM_ARGS_ATTR)
    if raw is None:
        return {}
    try:
        args = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise InvalidObservations(f"{source}: root attribute {SYSTEM_ARGS_ATTR!r}: expected the "
                                  f"JSON text of an object, got {str(raw)[:80]!r}")
    return args


def resolve_system(name: Any, source: str, args: Mapping[str, Any] | None = None) -> System:
    """Build the system a file names, from the registry only (with ``args``, the file's
    :func:`system_args`), or raise InvalidObservations naming the root attribute and
    listing the known systems. A ``"module:Class"`` name read from a file is refused,
    never imported."""
    where = f"{source}: root attribute 'system'"
    if not isinstance(name, str) or not name:
        raise InvalidObservations(f"{where}: system name must be a non-empty string, got {name!r}")
    try:
        return registry.get(name, references=False, **dict(args or {}))
    except UnknownSystem as exc:
        raise InvalidObservations(f"{where}: unknown system {name!r} ({exc})") from None
    except PhysodeError as exc:
        raise InvalidObservations(f"{where}: cannot build system {name!r} from root attribute "
                                  f"{SYSTEM_ARGS_ATTR!r} ({exc})") from None
    except Exception as exc:  # a registered factory that cannot be built without arguments
        raise InvalidObservations(
            f"{where}: cannot build system {name!r} ({type(exc).__name__}: {exc}); pass "
            "system=<instance> to load or save with a system that needs arguments"
        ) from None


def name_mismatch(label: str, system: System, source: str) -> str | None:
    """A sentence when a file labelled ``label`` does not hold data of ``system``, else None.

    The label matches the system's registry name or ``module:Class``, or a registered name
    whose system is of the same class (``Pendulum()`` built by hand reads ``"pendulum"``
    files). Only the registry is consulted; nothing is imported."""
    if label == system_label(system) or label == f"{type(system).__module__}:" \
            f"{type(system).__qualname__}":
        return None
    if ":" not in label:
        try:
            factory = registry.resolve(label, references=False)
        except PhysodeError:
            factory = None
        if isinstance(factory, type) and isinstance(system, factory):
            return None
        if factory is not None and not isinstance(factory, type):
            try:
                built = registry.get(label, references=False)
            except Exception:  # noqa: BLE001 - a factory needing arguments: cannot tell
                built = None
            if built is not None and type(built) is type(system):
                return None
    return (f"{source}: root attribute 'system': the file holds data of {label!r}, but the "
            f"given system is {system_label(system)!r} ({type(system).__name__}); load it "
            f"with the system it was written for")


def _observed_shape(var: Any, index: Mapping[str, np.ndarray], where: str,
                    out: list[str]) -> tuple[int, ...] | None:
    shape = list(var.shape)
    ok = True
    for dim, pos in index.items():
        if dim not in var.dims:
            out.append(f"{where}: index for unknown dimension {dim!r} (dims of {var.name!r} are "
                       f"{list(var.dims)})")
            ok = False
            continue
        size = var.shape[var.dims.index(dim)]
        if pos.size == 0 or np.any(pos < 0) or np.any(pos >= size) or np.any(np.diff(pos) <= 0):
            out.append(f"{where}: index along {dim!r} must be strictly increasing positions in "
                       f"[0, {size}), got {pos.tolist()}")
            ok = False
            continue
        shape[var.dims.index(dim)] = int(pos.size)
    return tuple(shape) if ok else None


def violations(obs: ObservationsLike, system: System | None, source: str,
               resolve: bool = True) -> list[str]:
    """Every rule ``obs`` breaks, as location-bearing sentences (empty when valid).

    ``system`` gives the layout to check against; when None and ``resolve``, the system
    named by ``obs.system`` is built from the registry (an unknown name is a violation)."""
    out: list[str] = []
    if not isinstance(obs.schema_version, (int, np.integer)) or not (
            1 <= int(obs.schema_version) <= SCHEMA_VERSION):
        out.append(f"{source}: root attribute 'schema_version': {obs.schema_version!r} is not a "
                   f"supported version (1..{SCHEMA_VERSION})")
    if system is None and resolve:
        try:
            system = resolve_system(obs.system, source, system_args(obs, source))
        except InvalidObservations as exc:
            out.append(str(exc))
    # Known parameter values (the truth of simulated data) are information, never a
    # constraint on which model may be fitted: they are not checked against the system.
    _parameter_violations(obs.parameters, source, out)
    if not obs.experiments:
        out.append(f"{location(source, '/experiments')}: no experiments")
    names = [e.name for e in obs.experiments]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        out.append(f"{location(source, '/experiments')}: experiment name(s) used twice: {dupes}")
    for name in obs.units:
        if name not in obs.variables:
            out.append(f"{source}: units given for {name!r}, which is not observed")
    layout = system.layout if system is not None else None
    outputs = Outputs(system) if system is not None else None
    declared = getattr(obs, "declarations", {})
    for exp in obs.experiments:
        experiment_violations(exp, layout, source, out, outputs)
        parts_violations(exp, system, declared, location(source, f"/experiments/{exp.name}"),
                         out)
    return out


class Outputs:
    """What an experiment may observe: the system's state variables and observables."""

    def __init__(self, system: System) -> None:
        self.by_name = dict(system.layout.by_name)
        self.by_name.update({k: v for k, v in system.observable_by_name.items()
                             if k not in self.by_name})
        self.states = tuple(system.layout.names)
        self.observables = tuple(system.observable_names)

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.states, *self.observables)


def _parameter_violations(parameters: Mapping[str, np.ndarray], source: str,
                          out: list[str]) -> None:
    """The values themselves must be finite numbers; names, shapes and bounds are the
    fitted model's business (a file may hold the truth of another model)."""
    for name, value in parameters.items():
        if not np.all(np.isfinite(value)):
            out.append(f"{location(source, '/parameters', name)}: parameter value is not finite")


def experiment_violations(exp: ExperimentLike, layout: Any, source: str,
                          out: list[str], outputs: Outputs | None = None) -> None:
    """Append the rules one experiment breaks (``layout``: the system's, or None;
    ``outputs``: its state variables and observables, what ``values`` may name)."""
    g = f"/experiments/{exp.name}"
    problem = times_problem(exp.t, decreasing=False)
    if problem is not None:
        out.append(f"{location(source, g, 'time')}: {problem}")
    n_t = exp.t.shape[0] if exp.t.ndim == 1 else -1
    t0 = float(exp.t0) if exp.t0 is not None else math.nan
    if not math.isfinite(t0):
        out.append(f"{location(source, g, 'time')}: attribute 't0' is not finite")
    elif problem is None and t0 > exp.t[0]:
        out.append(f"{location(source, g, 'time')}: attribute 't0'={t0!r} is after the first "
                   f"observation time {float(exp.t[0])!r}")
    if not exp.values:
        out.append(f"{location(source, g + '/values')}: no observed variable")
    for part in (*OPTIONAL_PARTS, "index"):
        if part == "y0":
            continue
        for k in getattr(exp, part) or {}:
            if k not in exp.values:
                out.append(f"{location(source, g + '/' + part, k)}: variable {k!r} is not "
                           f"observed (no dataset '{g}/values/{k}')")
    for name, v in exp.values.items():
        _values_violations(exp, name, v, outputs if outputs is not None else layout, n_t,
                           source, out)
    for name, v in (exp.y0 or {}).items():
        where = location(source, g + "/y0", name)
        var = layout.by_name.get(name) if layout is not None else None
        if layout is not None and var is None:
            out.append(f"{where}: the system has no state variable {name!r}")
        elif var is not None and v.shape != var.shape:
            out.append(f"{where}: shape {v.shape} does not match the variable's shape {var.shape}")
        if not np.all(np.isfinite(v)):
            out.append(f"{where}: initial state is not finite")


def _values_violations(exp: ExperimentLike, name: str, v: np.ndarray, layout: Any, n_t: int,
                       source: str, out: list[str]) -> None:
    g = f"/experiments/{exp.name}"
    where = location(source, g + "/values", name)
    var = None
    if layout is not None:
        var = layout.by_name.get(name)
        if var is None:
            observables = list(getattr(layout, "observables", ()))
            states = list(getattr(layout, "states", layout.names))
            out.append(f"{where}: the system has no state variable {name!r} and no "
                       f"observable of that name (its variables are {states}, its "
                       f"observables {observables})")
    expected = None
    if var is not None:
        comp = _observed_shape(var, exp.index.get(name, {}), where, out)
        if comp is not None:
            expected = (n_t, *comp)
            if v.shape != expected:
                out.append(f"{where}: shape {v.shape} does not match the system's layout: "
                           f"expected {expected} (time, {', '.join(var.dims) or 'scalar'})")
                expected = None
    elif v.ndim < 1 or v.shape[0] != n_t:
        out.append(f"{where}: shape {v.shape} does not start with the number of times {n_t}")
    m = exp.mask.get(name)
    if m is not None and m.shape != v.shape:
        out.append(f"{location(source, g + '/mask', name)}: shape {m.shape} differs from the "
                   f"values' shape {v.shape}")
        m = None
    bad = ~np.isfinite(v)
    if m is not None:
        bad &= ~m
    if np.any(bad):
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        out.append(f"{where}: NaN or inf without a mask at index {first} "
                   f"({int(bad.sum())} point(s)); flag missing points in '{g}/mask/{name}'")
    s = exp.sigma.get(name)
    if s is None:
        return
    swhere = location(source, g + "/sigma", name)
    full = v.shape if expected is None else expected
    allowed = sigma_shapes(full)
    if s.shape not in allowed:
        out.append(f"{swhere}: shape {s.shape} is none of () (per variable), "
                   f"{allowed[1]} (per component) or {allowed[2]} (per point)")
    elif np.any(np.isnan(s)) or np.any(np.isinf(s)):
        out.append(f"{swhere}: sigma is not finite")
    elif np.any(s < 0):
        out.append(f"{swhere}: negative sigma {float(s.min())!r}")
    elif np.any(s == 0):
        out.append(f"{swhere}: sigma must be positive, got 0")


def sigma_shapes(values_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The shapes sigma may have for values of ``values_shape``: per variable, per
    component, per point."""
    return [(), tuple(values_shape[1:]), tuple(values_shape)]


def raise_if(found: Iterable[str], source: str) -> None:
    """Raise the violations (if any) as one InvalidObservations; the list and the source
    are kept on the exception as ``violations`` and ``source``."""
    found = list(found)
    if not found:
        return
    if len(found) == 1:
        exc = InvalidObservations(found[0])
    else:
        exc = InvalidObservations(f"{len(found)} problems: " + "; ".join(found))
    exc.violations = found  # type: ignore[attr-defined]
    exc.source = source  # type: ignore[attr-defined]
    raise exc


__all__ = [
    "OPTIONAL_PARTS",
    "RESERVED_ROOT_ATTRS",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "SYSTEM_ARGS_ATTR",
    "ExperimentLike",
    "ObservationsLike",
    "experiment_violations",
    "location",
    "name_mismatch",
    "raise_if",
    "resolve_system",
    "system_args",
    "sigma_shapes",
    "system_label",
    "violations",
]
