"""The observation dataclasses: :class:`Experiment` and :class:`Observations`, and their helpers.

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

The rules are checked by :mod:`physode.data.schema`; the HDF5 file is read and written by
:mod:`physode.data.hdf5` (``physode.load_observations`` / ``physode.save_observations``),
the labelled form is :func:`physode.data.labelled.to_xarray`. This module imports neither.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from physode._version import __version__
from physode.data.display import observations_html, observations_text
from physode.data.experiment_parts import (
    ConditionValue,
    InputSeries,
    NoiseSpec,
    noise_spec,
    normalize_conditions,
    normalize_dosing,
    normalize_inputs,
    parts_equal,
)
from physode.data.schema import (
    RESERVED_ROOT_ATTRS,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    raise_if,
    resolve_system,
    system_args,
    violations,
)
from physode.errors import InvalidObservations
from physode.model.observables import Dose
from physode.model.parameter import Parameter, coerce_parameter
from physode.model.system import System


def _creator() -> str:
    return f"physode {__version__}"


# ---------------------------------------------------------------------------- metadata
MetaValue = Any  # str | bool | int | float | tuple of those (nested for arrays)


def metadata_value(value: Any, where: str) -> MetaValue:
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
        return metadata_value(value.item(), where)
    if isinstance(value, (list, tuple, np.ndarray)):
        items = tuple(metadata_value(v, where) for v in value)
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


def normalize_metadata(meta: Mapping[str, Any] | None, where: str) -> dict[str, MetaValue]:
    out: dict[str, MetaValue] = {}
    for key, value in dict(meta or {}).items():
        if not isinstance(key, str) or not key:
            raise InvalidObservations(f"{where}: metadata key {key!r} must be a non-empty str")
        out[key] = metadata_value(value, f"{where}, attribute {key!r}")
    return out


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
        noise: ``{output: NoiseSpec}``, the noise model of observed outputs (schema 2;
            see :mod:`physode.data.experiment_parts`); an output without one uses
            ``sigma`` (normal noise).
        conditions: ``{parameter: number or parameter name}``, this experiment's values.
        dosing: boluses (:class:`~physode.model.observables.Dose`), sorted by time.
        inputs: ``{name: InputSeries}``, forcing read as ``self.input(name, t)``.
        preequilibration: None, or the condition ``{parameter: value}`` whose steady state
            is the initial state.

    ``values`` names state variables or observables the system declares.
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
    noise: dict[str, NoiseSpec] = field(default_factory=dict)
    conditions: dict[str, ConditionValue | np.ndarray] = field(default_factory=dict)
    dosing: list[Dose] = field(default_factory=list)
    inputs: dict[str, InputSeries] = field(default_factory=dict)
    preequilibration: dict[str, ConditionValue | np.ndarray] | None = None

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
        self.metadata = normalize_metadata(self.metadata, where)
        self.noise = {str(k): noise_spec(v, f"{where}: noise[{k!r}]")
                      for k, v in dict(self.noise or {}).items()}
        self.conditions = normalize_conditions(self.conditions, f"{where}: conditions")
        self.dosing = normalize_dosing(self.dosing, f"{where}: dosing")
        self.inputs = normalize_inputs(self.inputs, f"{where}: inputs")
        if self.preequilibration is not None:
            self.preequilibration = normalize_conditions(self.preequilibration,
                                                         f"{where}: preequilibration")

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
        declarations: ``{name: Parameter}`` of the parameters the experiments introduce
            (estimated noise coefficients, condition-specific parameters) that the system
            does not have; :func:`physode.fit` adds them to the system.
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
    declarations: dict[str, Parameter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.declarations = {str(k): coerce_parameter(v, str(k))
                             for k, v in dict(self.declarations or {}).items()}
        if isinstance(self.experiments, Experiment):
            self.experiments = [self.experiments]
        self.experiments = list(self.experiments)
        self.units = {str(k): str(v) for k, v in dict(self.units or {}).items() if v is not None}
        self.parameter_units = {str(k): str(v) for k, v in dict(self.parameter_units or {}).items()
                                if v is not None}
        self.parameters = {str(k): _float_array(v, f"parameter {k!r}").astype(np.float64)
                           for k, v in dict(self.parameters or {}).items()}
        self.metadata = normalize_metadata(self.metadata, "file metadata")
        clash = [k for k in self.metadata if k in RESERVED_ROOT_ATTRS]
        if clash:
            raise InvalidObservations(f"file metadata uses reserved attribute name(s) {clash}")

    # ------------------------------------------------------------------ access
    def __repr__(self) -> str:
        return observations_text(self)

    def _repr_html_(self) -> str:
        return observations_html(self)

    def __len__(self) -> int:
        return len(self.experiments)

    def __iter__(self) -> Iterator[Experiment]:
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
        """A fresh instance of the observed system, looked up in the registry only (a
        ``"module:Class"`` name is refused, never imported: the name may come from a file);
        with ``truth=True`` the recorded parameter values are applied to it."""
        system = resolve_system(self.system, "<Observations>",
                                system_args(self, "<Observations>"))
        if truth and self.parameters:
            system.set_params(**self.parameters)
        return system

    # ------------------------------------------------------------------ checks
    def validate(self, system: System | None = None, source: str = "<Observations>") -> None:
        """Check every schema rule; raise :class:`InvalidObservations` listing violations.

        ``system`` gives the layout to check shapes against; by default the system named
        by ``self.system`` is built from the registry (an unknown name is a violation)."""
        raise_if(violations(self, system, source), source)

    def equals(self, other: Observations) -> bool:
        """Exact equality: every array (dtype, shape, values, NaN at the same places),
        attribute, unit and name."""
        return _obs_equal(self, other)


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
    if list(a.declarations) != list(b.declarations) or any(
            a.declarations[k].describe() != b.declarations[k].describe() for k in a.declarations):
        return False
    for x, y in zip(a.experiments, b.experiments):
        if (x.name, x.t0, x.metadata) != (y.name, y.t0, y.metadata) or not arr_eq(x.t, y.t):
            return False
        if not parts_equal(x, y):
            return False
        if not (dict_eq(x.values, y.values) and dict_eq(x.mask, y.mask)
                and dict_eq(x.sigma, y.sigma)):
            return False
        if list(x.index) != list(y.index) or any(
                not dict_eq(x.index[k], y.index[k]) for k in x.index):
            return False
        if x.y0 is None or y.y0 is None:
            if (x.y0 is None) != (y.y0 is None):
                return False
        elif not dict_eq(x.y0, y.y0):
            return False
    return True


__all__ = [
    "RESERVED_ROOT_ATTRS",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "Experiment",
    "MetaValue",
    "Observations",
    "metadata_value",
    "normalize_metadata",
]
