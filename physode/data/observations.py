"""Observed trajectories of a physical system, and their HDF5 file format.

An :class:`Observations` object holds one or more experiments of one system. Each
:class:`Experiment` has its observation times and, per observed state variable, the values
at those times. Observation may be partial in three ways:

- a subset of the state variables (a pendulum observed by its angle only);
- a subset of a variable's components, chosen per dimension by ``index``
  (``{"concentration": {"species": [0, 3]}}`` keeps species 0 and 3), the values then have
  the reduced shape ``(n_times, 2)``;
- single missing points, flagged by a boolean ``mask`` (True = missing, numpy's
  masked-array convention); values may be NaN only where masked.

Optional per variable: ``sigma``, the standard deviation of the measurement noise, of shape
``()`` (one value for the variable), the observed component shape (one per component) or
the values' shape (one per point); strictly positive. Optional per experiment: the initial
state ``y0`` (``{variable: array of the variable's full shape}``) at time ``t0`` (defaults
to the first observation time), and free-form ``metadata``. Per file: the system's name
(registry name or ``"package.module:Class"``), known parameter values (the truth, for
synthetic data), units and metadata.

The file layout is written up in ``datasets/README.md``; :func:`save_observations` writes
it atomically and :func:`load_observations` checks every rule of it, raising
:class:`~physode.errors.InvalidObservations` that names the file, the group and the dataset
of each violation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from physode.data.atomic import atomic_path
from physode.errors import InvalidObservations, PhysodeError

if TYPE_CHECKING:
    import xarray as xr

    from physode.model.system import System

SCHEMA_NAME = "physode.observations"
SCHEMA_VERSION = 1
#: Root attributes with a meaning in the schema; every other root attribute is metadata.
RESERVED_ROOT_ATTRS = ("schema", "schema_version", "system", "creator")
_OPTIONAL_PARTS = ("mask", "sigma", "y0")


def _creator() -> str:
    from physode._version import __version__

    return f"physode {__version__}"


# ---------------------------------------------------------------------------- metadata
MetaValue = Any  # str | bool | int | float | tuple of those (nested for arrays)


def _norm_meta_value(value: Any, where: str) -> MetaValue:
    """Normalise a metadata value to str/bool/int/float or (nested) tuples of them, the
    types an HDF5 attribute round-trips exactly."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (str, bool)):
        return str(value) if isinstance(value, str) else bool(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _norm_meta_value(value.item(), where)
    if isinstance(value, (list, tuple, np.ndarray)):
        items = tuple(_norm_meta_value(v, where) for v in value)
        kinds = {type(v) for v in items if not isinstance(v, tuple)}
        if len(kinds) > 1 and not kinds <= {int, float}:
            kind_names = sorted(k.__name__ for k in kinds)
            raise InvalidObservations(f"{where}: metadata arrays must hold one type, "
                                      f"got {kind_names}")
        if float in kinds:
            items = tuple(float(v) if isinstance(v, int) else v for v in items)
        return items
    raise InvalidObservations(
        f"{where}: metadata value {value!r} of type {type(value).__name__} cannot be stored as "
        "an HDF5 attribute (use str, bool, int, float or a list of them)"
    )


def _norm_meta(meta: Mapping[str, Any] | None, where: str) -> dict[str, MetaValue]:
    out: dict[str, MetaValue] = {}
    for key, value in dict(meta or {}).items():
        if not isinstance(key, str) or not key:
            raise InvalidObservations(f"{where}: metadata key {key!r} must be a non-empty str")
        out[key] = _norm_meta_value(value, f"{where}, attribute {key!r}")
    return out


def _meta_to_attr(value: MetaValue) -> Any:
    if isinstance(value, tuple):
        if len(value) == 0:
            return np.zeros(0)
        arr = np.asarray(value)
        if arr.dtype.kind == "U":
            return arr.astype(object)
        return arr
    return value


# ---------------------------------------------------------------------------- classes
def _float_array(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InvalidObservations(f"{what}: cannot convert to an array ({exc})") from None
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise InvalidObservations(f"{what}: expected floating-point numbers, got dtype {arr.dtype}")
    return arr


@dataclass(eq=False)
class Experiment:
    """One experiment: observation times and the observed values of some state variables.

    Attributes:
        t: observation times, shape ``(n,)``, strictly increasing.
        values: ``{variable: array (n, *observed_shape)}``; the observed shape is the
            variable's shape with every dimension in ``index`` reduced to the chosen
            positions.
        index: ``{variable: {dim: positions}}`` for partially observed variables
            (positions strictly increasing, 0-based); dimensions not named are complete.
        mask: ``{variable: bool array like values}``, True where the point is missing.
        sigma: ``{variable: array}`` of noise standard deviations: shape ``()``, the
            observed shape, or the values' shape.
        y0: ``{variable: array of the variable's full shape}``, the initial state at
            ``t0`` when known (may name a subset of the variables), else None.
        t0: time of ``y0`` (where a simulation of this experiment starts); default ``t[0]``.
        name: the experiment's name (its HDF5 group name), unique within a file.
        metadata: free-form attributes (str, bool, int, float or lists of them).
    """

    t: np.ndarray
    values: dict[str, np.ndarray]
    index: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    mask: dict[str, np.ndarray] = field(default_factory=dict)
    sigma: dict[str, np.ndarray] = field(default_factory=dict)
    y0: dict[str, np.ndarray] | None = None
    t0: float | None = None
    name: str = "exp0"
    metadata: dict[str, MetaValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"experiment {self.name!r}"
        if not isinstance(self.name, str) or not self.name or "/" in self.name or self.name in (
            ".",
            "..",
        ):
            raise InvalidObservations(f"experiment name {self.name!r} must be a non-empty "
                                      "string without '/'")
        self.t = _float_array(self.t, f"{where}: time")
        self.values = {str(k): _float_array(v, f"{where}: values[{k!r}]")
                       for k, v in dict(self.values).items()}
        self.index = {
            str(k): {str(d): np.asarray(p, dtype=np.int64).reshape(-1) for d, p in dict(v).items()}
            for k, v in dict(self.index or {}).items()
        }
        self.mask = {str(k): np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v,
                                        dtype=bool) for k, v in dict(self.mask or {}).items()}
        self.sigma = {str(k): _float_array(v, f"{where}: sigma[{k!r}]").astype(np.float64)
                      for k, v in dict(self.sigma or {}).items()}
        if self.y0 is not None:
            self.y0 = {str(k): _float_array(v, f"{where}: y0[{k!r}]").astype(np.float64)
                       for k, v in dict(self.y0).items()}
        if self.t0 is None:
            self.t0 = float(self.t[0]) if self.t.ndim == 1 and self.t.size else 0.0
        self.t0 = float(self.t0)
        self.metadata = _norm_meta(self.metadata, where)

    @property
    def variables(self) -> tuple[str, ...]:
        """Names of the observed state variables, in order."""
        return tuple(self.values)

    def observed_values(self, name: str) -> np.ndarray:
        """The values of ``name`` with NaN at the masked (missing) points."""
        v = self.values[name]
        m = self.mask.get(name)
        if m is None:
            return v
        out = v.copy()
        out[m] = np.nan
        return out


@dataclass(eq=False)
class Observations:
    """Observations of one system: one or more :class:`Experiment` s plus file-level facts.

    Attributes:
        system: registry name (``"three-body-paper"``) or ``"package.module:Class"``.
        experiments: the experiments, in order.
        units: ``{variable: unit string}`` of the observed variables (absent = unitless).
        time_units: unit of the times.
        parameters: ``{name: value}`` known parameter values (the truth of synthetic data).
        parameter_units: ``{name: unit string}``.
        metadata: free-form file attributes.
        creator: the program that wrote the data (``"physode 0.1.0"``).
        schema_version: the file schema version the object corresponds to.
    """

    system: str
    experiments: list[Experiment]
    units: dict[str, str] = field(default_factory=dict)
    time_units: str | None = None
    parameters: dict[str, np.ndarray] = field(default_factory=dict)
    parameter_units: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, MetaValue] = field(default_factory=dict)
    creator: str = field(default_factory=_creator)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.experiments, Experiment):
            self.experiments = [self.experiments]
        self.experiments = list(self.experiments)
        self.units = {str(k): str(v) for k, v in dict(self.units or {}).items() if v is not None}
        self.parameter_units = {str(k): str(v) for k, v in dict(self.parameter_units or {}).items()
                                if v is not None}
        self.parameters = {str(k): _float_array(v, f"parameter {k!r}").astype(np.float64)
                           for k, v in dict(self.parameters or {}).items()}
        self.metadata = _norm_meta(self.metadata, "file metadata")
        clash = [k for k in self.metadata if k in RESERVED_ROOT_ATTRS]
        if clash:
            raise InvalidObservations(f"file metadata uses reserved attribute name(s) {clash}")

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.experiments)

    def __iter__(self):
        return iter(self.experiments)

    def __getitem__(self, key: int | str) -> Experiment:
        if isinstance(key, str):
            for e in self.experiments:
                if e.name == key:
                    return e
            raise KeyError(f"no experiment {key!r}; experiments: {self.experiment_names}")
        return self.experiments[key]

    @property
    def experiment_names(self) -> list[str]:
        return [e.name for e in self.experiments]

    @property
    def variables(self) -> tuple[str, ...]:
        """Every variable observed in at least one experiment, in first-seen order."""
        seen: dict[str, None] = {}
        for e in self.experiments:
            for name in e.values:
                seen.setdefault(name)
        return tuple(seen)

    def make_system(self, *, truth: bool = False) -> System:
        """A fresh instance of the observed system (``registry.get(self.system)``); with
        ``truth=True`` the recorded parameter values are applied to it."""
        system = _resolve_system(self.system, "<Observations>")
        if truth and self.parameters:
            system.set_params(**self.parameters)
        return system

    # ------------------------------------------------------------------ checks, export
    def validate(self, system: System | None = None, source: str = "<Observations>") -> None:
        """Check every schema rule; raise :class:`InvalidObservations` listing violations.

        ``system`` gives the layout to check shapes against; by default the system named
        by ``self.system`` is built from the registry (an unknown name is a violation)."""
        _raise_if(_violations(self, system, source), source)

    def equals(self, other: Observations) -> bool:
        """Exact equality: every array (dtype, shape, values, NaN at the same places),
        attribute, unit and name."""
        return _obs_equal(self, other)

    def to_xarray(self, system: System | None = None) -> xr.Dataset:
        """The observations as a labelled :class:`xarray.Dataset` (see
        :func:`physode.data.labelled.observations_to_xarray`)."""
        from physode.data.labelled import observations_to_xarray

        return observations_to_xarray(self, system=system)

    def save(self, path: str | os.PathLike[str], system: System | None = None) -> None:
        """Same as :func:`save_observations`."""
        save_observations(self, path, system=system)


# ---------------------------------------------------------------------------- validation
def _resolve_system(name: Any, source: str) -> System:
    """Build the named system from the registry, or raise InvalidObservations."""
    from physode.model import registry

    where = f"{source}: root attribute 'system'"
    if not isinstance(name, str) or not name:
        raise InvalidObservations(f"{where}: system name must be a non-empty string, got {name!r}")
    try:
        return registry.get(name, references=False)
    except PhysodeError as exc:
        raise InvalidObservations(f"{where}: unknown system {name!r} ({exc})") from None
    except Exception as exc:  # a user class that cannot be built without arguments
        raise InvalidObservations(
            f"{where}: cannot build system {name!r} ({type(exc).__name__}: {exc}); pass "
            "system=<instance> to load or save with a system that needs arguments"
        ) from None


def _loc(source: str, group: str, dataset: str | None = None) -> str:
    text = f"{source}: group '{group}'"
    return text + (f", dataset '{dataset}'" if dataset is not None else "")


def _check_times(t: np.ndarray, where: str, out: list[str]) -> bool:
    if t.ndim != 1 or t.size == 0:
        out.append(f"{where}: times must be a non-empty 1-D array, got shape {t.shape}")
        return False
    if not np.all(np.isfinite(t)):
        i = int(np.flatnonzero(~np.isfinite(t))[0])
        out.append(f"{where}: non-finite time at index {i}")
        return False
    d = np.diff(t)
    if np.any(d == 0):
        i = int(np.flatnonzero(d == 0)[0])
        out.append(f"{where}: duplicate time {float(t[i])!r} at indices {i} and {i + 1}")
        return False
    if np.any(d < 0):
        i = int(np.flatnonzero(d < 0)[0])
        out.append(f"{where}: times are not increasing: t[{i}]={float(t[i])!r} > "
                   f"t[{i + 1}]={float(t[i + 1])!r}")
        return False
    return True


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


def _violations(obs: Observations, system: System | None, source: str,
                resolve: bool = True) -> list[str]:
    out: list[str] = []
    if not isinstance(obs.schema_version, (int, np.integer)) or not (
            1 <= int(obs.schema_version) <= SCHEMA_VERSION):
        out.append(f"{source}: root attribute 'schema_version': {obs.schema_version!r} is not a "
                   f"supported version (1..{SCHEMA_VERSION})")
    if system is None and resolve:
        try:
            system = _resolve_system(obs.system, source)
        except InvalidObservations as exc:
            out.append(str(exc))
    layout = system.layout if system is not None else None
    if system is not None and obs.parameters:
        specs = system.parameter_specs()
        for name, value in obs.parameters.items():
            where = _loc(source, "/parameters", name)
            if name not in specs:
                out.append(f"{where}: {type(system).__name__} has no parameter {name!r} "
                           f"(its parameters: {list(specs)})")
            elif value.shape != specs[name].shape:
                out.append(f"{where}: shape {value.shape} does not match the parameter's shape "
                           f"{specs[name].shape}")
            elif not np.all(np.isfinite(value)):
                out.append(f"{where}: parameter value is not finite")
            else:
                try:
                    specs[name].check(torch.as_tensor(value), name)
                except PhysodeError as exc:
                    out.append(f"{where}: {exc}")
    for name in obs.parameter_units:
        if name not in obs.parameters:
            out.append(f"{_loc(source, '/parameters', name)}: units given for a parameter "
                       "without a value")
    if not obs.experiments:
        out.append(f"{_loc(source, '/experiments')}: no experiments")
    names = [e.name for e in obs.experiments]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        out.append(f"{_loc(source, '/experiments')}: experiment name(s) used twice: {dupes}")
    for name in obs.units:
        if name not in obs.variables:
            out.append(f"{source}: units given for {name!r}, which is not observed")
    for exp in obs.experiments:
        _experiment_violations(exp, layout, source, out)
    return out


def _experiment_violations(exp: Experiment, layout: Any, source: str, out: list[str]) -> None:
    g = f"/experiments/{exp.name}"
    times_ok = _check_times(exp.t, _loc(source, g, "time"), out)
    n_t = exp.t.shape[0] if exp.t.ndim == 1 else -1
    if not math.isfinite(exp.t0):
        out.append(f"{_loc(source, g, 'time')}: attribute 't0' is not finite")
    elif times_ok and exp.t0 > exp.t[0]:
        out.append(f"{_loc(source, g, 'time')}: attribute 't0'={exp.t0!r} is after the first "
                   f"observation time {float(exp.t[0])!r}")
    if not exp.values:
        out.append(f"{_loc(source, g + '/values')}: no observed variable")
    for part in _OPTIONAL_PARTS + ("index",):
        extra = [k for k in (getattr(exp, part) or {}) if k not in exp.values and part != "y0"]
        for k in extra:
            out.append(f"{_loc(source, g + '/' + part, k)}: variable {k!r} is not observed "
                       f"(no dataset '{g}/values/{k}')")
    for name, v in exp.values.items():
        where = _loc(source, g + "/values", name)
        var = None
        if layout is not None:
            var = layout.by_name.get(name)
            if var is None:
                out.append(f"{where}: the system has no state variable {name!r} (its variables "
                           f"are {list(layout.names)})")
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
            out.append(f"{_loc(source, g + '/mask', name)}: shape {m.shape} differs from the "
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
        if s is not None:
            swhere = _loc(source, g + "/sigma", name)
            allowed = [(), v.shape[1:], v.shape] if expected is None else [
                (), expected[1:], expected]
            if s.shape not in allowed:
                out.append(f"{swhere}: shape {s.shape} is none of () (per variable), "
                           f"{allowed[1]} (per component) or {allowed[2]} (per point)")
            elif np.any(np.isnan(s)) or np.any(np.isinf(s)):
                out.append(f"{swhere}: sigma is not finite")
            elif np.any(s < 0):
                out.append(f"{swhere}: negative sigma {float(s.min())!r}")
            elif np.any(s == 0):
                out.append(f"{swhere}: sigma must be positive, got 0")
    for name, v in (exp.y0 or {}).items():
        where = _loc(source, g + "/y0", name)
        var = layout.by_name.get(name) if layout is not None else None
        if layout is not None and var is None:
            out.append(f"{where}: the system has no state variable {name!r}")
        elif var is not None and v.shape != var.shape:
            out.append(f"{where}: shape {v.shape} does not match the variable's shape {var.shape}")
        if not np.all(np.isfinite(v)):
            out.append(f"{where}: initial state is not finite")


def _raise_if(violations: list[str], source: str) -> None:
    if not violations:
        return
    if len(violations) == 1:
        exc = InvalidObservations(violations[0])
    else:
        exc = InvalidObservations(f"{len(violations)} problems: " + "; ".join(violations))
    exc.violations = violations  # type: ignore[attr-defined]
    exc.source = source  # type: ignore[attr-defined]
    raise exc


def _obs_equal(a: Observations, b: Observations) -> bool:
    def arr_eq(x: np.ndarray, y: np.ndarray) -> bool:
        return x.dtype == y.dtype and x.shape == y.shape and bool(
            np.array_equal(x, y, equal_nan=x.dtype.kind == "f"))

    def dict_eq(x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray]) -> bool:
        return list(x) == list(y) and all(arr_eq(x[k], y[k]) for k in x)

    if (a.system, a.units, a.time_units, a.parameter_units, a.metadata, a.creator,
            a.schema_version) != (b.system, b.units, b.time_units, b.parameter_units,
                                  b.metadata, b.creator, b.schema_version):
        return False
    if not dict_eq(a.parameters, b.parameters) or len(a.experiments) != len(b.experiments):
        return False
    for x, y in zip(a.experiments, b.experiments):
        if (x.name, x.t0, x.metadata) != (y.name, y.t0, y.metadata) or not arr_eq(x.t, y.t):
            return False
        if not (dict_eq(x.values, y.values) and dict_eq(x.mask, y.mask)
                and dict_eq(x.sigma, y.sigma)):
            return False
        if list(x.index) != list(y.index) or any(
                not dict_eq(x.index[k], y.index[k]) for k in x.index):
            return False
        if (x.y0 is None) != (y.y0 is None) or (x.y0 is not None and not dict_eq(x.y0, y.y0)):
            return False
    return True


# ---------------------------------------------------------------------------- writing
def save_observations(obs: Observations, path: str | os.PathLike[str],
                      system: System | None = None) -> None:
    """Validate ``obs`` and write it to ``path`` (HDF5, the schema of datasets/README.md).

    The write is atomic: the file is written under a temporary name in the same directory
    and renamed over ``path``, so an interrupted save leaves any previous file intact."""
    import h5py

    if not isinstance(obs, Observations):
        raise InvalidObservations(f"save_observations needs an Observations object, got "
                                  f"{type(obs).__name__}")
    if system is None:
        system = _resolve_system(obs.system, str(path))
    obs.validate(system)
    dims = {v.name: v.dims for v in system.layout.variables}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["schema"] = SCHEMA_NAME
        f.attrs["schema_version"] = np.int64(obs.schema_version)
        f.attrs["system"] = obs.system
        f.attrs["creator"] = obs.creator
        for key, value in obs.metadata.items():
            f.attrs[key] = _meta_to_attr(value)
        if obs.parameters:
            pg = f.create_group("parameters")
            pg.attrs["names"] = _names_attr(obs.parameters)
            for name, value in obs.parameters.items():
                ds = pg.create_dataset(name, data=value)
                if name in obs.parameter_units:
                    ds.attrs["units"] = obs.parameter_units[name]
        eg = f.create_group("experiments")
        eg.attrs["names"] = _names_attr(e.name for e in obs.experiments)
        for exp in obs.experiments:
            _write_experiment(eg.create_group(exp.name), exp, obs, dims)


def _names_attr(names: Iterable[str]) -> np.ndarray:
    return np.asarray(list(names), dtype=object)


def _write_experiment(g: Any, exp: Experiment, obs: Observations,
                      dims: Mapping[str, tuple[str, ...]]) -> None:
    for key, value in exp.metadata.items():
        g.attrs[key] = _meta_to_attr(value)
    ts = g.create_dataset("time", data=exp.t)
    ts.attrs["dims"] = _names_attr(["time"])
    if obs.time_units is not None:
        ts.attrs["units"] = obs.time_units
    ts.attrs["t0"] = np.float64(exp.t0)
    vg = g.create_group("values")
    vg.attrs["variables"] = _names_attr(exp.values)
    for name, v in exp.values.items():
        ds = vg.create_dataset(name, data=v)
        ds.attrs["dims"] = _names_attr(["time", *dims[name]])
        if name in obs.units:
            ds.attrs["units"] = obs.units[name]
        for dim, pos in exp.index.get(name, {}).items():
            ds.attrs[f"index_{dim}"] = pos
    for part in _OPTIONAL_PARTS:
        content = getattr(exp, part)
        if not content:
            continue
        pg = g.create_group(part)
        pg.attrs["variables"] = _names_attr(content)
        for name, v in content.items():
            ds = pg.create_dataset(name, data=v)
            if part != "mask" and name in obs.units:
                ds.attrs["units"] = obs.units[name]


# ---------------------------------------------------------------------------- reading
class _Reader:
    """Reads one file, tracking where it is so that every error can name its location."""

    def __init__(self, f: Any, source: str) -> None:
        self.f = f
        self.source = source
        self.where = f"{source}: group '/'"
        self.dims: dict[tuple[str, str], tuple[str, ...] | None] = {}

    def at(self, group: str, dataset: str | None = None) -> str:
        self.where = _loc(self.source, group, dataset)
        return self.where

    def fail(self, message: str) -> InvalidObservations:
        return InvalidObservations(f"{self.where}: {message}")

    def group(self, path: str, required: bool = True) -> Any:
        import h5py

        self.at(path)
        obj = self.f.get(path)
        if obj is None:
            if required:
                raise self.fail("missing group")
            return None
        if not isinstance(obj, h5py.Group):
            raise self.fail("expected a group, found a dataset")
        return obj

    def names_attr(self, g: Any, group: str, key: str) -> list[str]:
        self.at(group)
        if key not in g.attrs:
            raise self.fail(f"missing attribute {key!r} (the list of its members)")
        raw = np.asarray(g.attrs[key]).reshape(-1)
        names = [x.decode() if isinstance(x, bytes) else x for x in raw.tolist()]
        if not all(isinstance(n, str) and n and "/" not in n for n in names):
            raise self.fail(f"attribute {key!r} must list member names, got {raw!r}")
        if len(set(names)) != len(names):
            raise self.fail(f"attribute {key!r} lists a name twice: {names}")
        return names

    def dataset(self, g: Any, group: str, name: str, kind: str = "f") -> np.ndarray:
        import h5py

        self.at(group, name)
        obj = g.get(name)
        if obj is None:
            raise self.fail("missing dataset")
        if not isinstance(obj, h5py.Dataset):
            raise self.fail("expected a dataset, found a group")
        if obj.dtype.kind not in kind:
            want = {"f": "floating-point", "b": "boolean", "iu": "integer"}.get(kind, kind)
            raise self.fail(f"expected {want} data, got dtype {obj.dtype}")
        data = obj[()]
        return np.asarray(data)

    def str_attr(self, obj: Any, key: str, required: bool = False) -> str | None:
        if key not in obj.attrs:
            if required:
                raise self.fail(f"missing attribute {key!r}")
            return None
        value = obj.attrs[key]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str):
            raise self.fail(f"attribute {key!r} must be a string, got {value!r}")
        return value

    def unexpected(self, g: Any, group: str, listed: Iterable[str]) -> None:
        extra = sorted(set(g.keys()) - set(listed))
        if extra:
            self.at(group, extra[0])
            raise self.fail(f"member(s) {extra} not listed in the group's attribute")


def load_observations(path: str | os.PathLike[str], system: System | None = None) -> Observations:
    """Read and validate an observations file; raise :class:`InvalidObservations` (naming
    the file, group and dataset) on any violation of the schema.

    ``system``: an instance to check the layout against, for systems the registry cannot
    build without arguments; by default the file's ``system`` attribute is looked up."""
    import h5py

    source = str(path)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{source}: no such file")
    if p.is_dir():
        raise InvalidObservations(f"{source}: is a directory, not an HDF5 file")
    try:
        is_hdf5 = h5py.is_hdf5(source)
    except OSError as exc:
        raise InvalidObservations(f"{source}: cannot read the file ({exc})") from None
    if not is_hdf5:
        raise InvalidObservations(f"{source}: not an HDF5 file (no HDF5 signature)")
    try:
        f = h5py.File(source, "r")
    except OSError as exc:
        raise InvalidObservations(
            f"{source}: cannot open as HDF5, the file is truncated or corrupt ({exc})") from None
    reader = _Reader(f, source)
    try:
        with f:
            obs = _read(reader)
    except InvalidObservations:
        raise
    except Exception as exc:  # h5py/HDF5 errors on a corrupt file: still the user's file
        raise InvalidObservations(
            f"{reader.where}: unreadable ({type(exc).__name__}: {exc})") from None
    violations: list[str] = []
    if system is None:
        try:
            system = _resolve_system(obs.system, source)
        except InvalidObservations as exc:
            violations.append(str(exc))
    violations += _violations(obs, system, source, resolve=False)
    for (exp_name, var), dims in reader.dims.items():
        if dims is None:
            continue
        where = f"{_loc(source, f'/experiments/{exp_name}/values', var)}: attribute 'dims'"
        sv = system.layout.by_name.get(var) if system is not None else None
        if sv is not None and dims != ("time", *sv.dims):
            violations.append(f"{where} {list(dims)} does not match the system's "
                              f"{['time', *sv.dims]}")
        elif sv is None and len(dims) != obs[exp_name].values[var].ndim:
            violations.append(f"{where} names {len(dims)} dimension(s) for data of shape "
                              f"{obs[exp_name].values[var].shape}")
    _raise_if(violations, source)
    return obs


def _read(r: _Reader) -> Observations:
    f = r.f
    r.at("/")
    schema = r.str_attr(f, "schema")
    if schema != SCHEMA_NAME:
        raise r.fail(f"not a physode observations file (root attribute 'schema' is {schema!r}, "
                     f"expected {SCHEMA_NAME!r})")
    if "schema_version" not in f.attrs:
        raise r.fail("missing root attribute 'schema_version'")
    version = f.attrs["schema_version"]
    if not isinstance(version, (int, np.integer)) or isinstance(version, (bool, np.bool_)):
        raise r.fail(f"root attribute 'schema_version' must be an integer, got {version!r}")
    version = int(version)
    if version > SCHEMA_VERSION:
        raise r.fail(f"schema version {version} is newer than this physode supports "
                     f"({SCHEMA_VERSION}); upgrade physode to read this file")
    if version < 1:
        raise r.fail(f"invalid schema version {version}")
    system = r.str_attr(f, "system", required=True)
    creator = r.str_attr(f, "creator") or ""
    metadata = {k: _norm_meta_value(v, r.where) for k, v in f.attrs.items()
                if k not in RESERVED_ROOT_ATTRS}
    r.unexpected(f, "/", ("parameters", "experiments"))

    parameters: dict[str, np.ndarray] = {}
    parameter_units: dict[str, str] = {}
    pg = r.group("/parameters", required=False)
    if pg is not None:
        names = r.names_attr(pg, "/parameters", "names")
        r.unexpected(pg, "/parameters", names)
        for name in names:
            parameters[name] = r.dataset(pg, "/parameters", name)
            u = r.str_attr(pg[name], "units")
            if u is not None:
                parameter_units[name] = u

    eg = r.group("/experiments")
    names = r.names_attr(eg, "/experiments", "names")
    r.unexpected(eg, "/experiments", names)
    if not names:
        raise r.fail("no experiments")
    units: dict[str, str] = {}
    time_units: list[str | None] = []
    experiments = [_read_experiment(r, eg, name, units, time_units) for name in names]
    if len(set(time_units)) > 1:
        r.at("/experiments")
        raise r.fail(f"experiments disagree on the time units: {sorted(map(str, time_units))}")
    return Observations(system=system, experiments=experiments, units=units,
                        time_units=time_units[0], parameters=parameters,
                        parameter_units=parameter_units, metadata=metadata, creator=creator,
                        schema_version=version)


def _read_experiment(r: _Reader, eg: Any, name: str, units: dict[str, str],
                     time_units: list[str | None]) -> Experiment:
    gpath = f"/experiments/{name}"
    g = r.group(gpath)
    r.unexpected(g, gpath, ("time", "values", *_OPTIONAL_PARTS))
    metadata = {k: _norm_meta_value(v, r.where) for k, v in g.attrs.items()}
    t = r.dataset(g, gpath, "time")
    tds = g["time"]
    time_units.append(r.str_attr(tds, "units"))
    t0 = None
    if "t0" in tds.attrs:
        raw = np.asarray(tds.attrs["t0"])
        if raw.shape != () or raw.dtype.kind not in "fiu":
            raise r.fail(f"attribute 't0' must be a number, got {raw!r}")
        t0 = float(raw)
    vpath = gpath + "/values"
    vg = r.group(vpath)
    variables = r.names_attr(vg, vpath, "variables")
    r.unexpected(vg, vpath, variables)
    values: dict[str, np.ndarray] = {}
    index: dict[str, dict[str, np.ndarray]] = {}
    for var in variables:
        values[var] = r.dataset(vg, vpath, var)
        ds = vg[var]
        dims = None
        if "dims" in ds.attrs:
            raw = np.asarray(ds.attrs["dims"]).reshape(-1)
            dims = tuple(x.decode() if isinstance(x, bytes) else str(x) for x in raw.tolist())
        r.dims[(name, var)] = dims
        u = r.str_attr(ds, "units")
        if u is not None:
            if units.get(var, u) != u:
                raise r.fail(f"units {u!r} differ from {units[var]!r} in another experiment")
            units[var] = u
        for key in ds.attrs:
            if key.startswith("index_"):
                raw = np.asarray(ds.attrs[key])
                if raw.dtype.kind not in "iu" or raw.ndim != 1:
                    raise r.fail(f"attribute {key!r} must be a 1-D integer array, got {raw!r}")
                index.setdefault(var, {})[key[len("index_"):]] = raw.astype(np.int64)
    parts: dict[str, dict[str, np.ndarray]] = {}
    for part in _OPTIONAL_PARTS:
        ppath = f"{gpath}/{part}"
        pg = r.group(ppath, required=False)
        if pg is None:
            continue
        members = r.names_attr(pg, ppath, "variables")
        r.unexpected(pg, ppath, members)
        parts[part] = {m: r.dataset(pg, ppath, m, kind="b" if part == "mask" else "f")
                       for m in members}
    return Experiment(t=t, values=values, index=index, mask=parts.get("mask", {}),
                      sigma=parts.get("sigma", {}), y0=parts.get("y0"), t0=t0, name=name,
                      metadata=metadata)


__all__ = [
    "Experiment",
    "Observations",
    "RESERVED_ROOT_ATTRS",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "load_observations",
    "save_observations",
]
