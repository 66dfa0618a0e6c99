"""The parts of an experiment beyond its measurements (schema version 2), as plain data.

An experiment as scientists run it (PEtab v1's condition, measurement and observable
tables; Data2Dynamics and AMICI's dosing and pre-equilibration):

- ``noise[output]``: a :class:`NoiseSpec`, the noise model of one observed state variable
  or observable: distribution (normal, Laplace) on a scale (lin, log, log10) with
  ``sigma = a + b |prediction|``, ``a`` and ``b`` known numbers or names of parameters
  estimated with the rest (the same name in several experiments is one parameter);
- ``conditions``: ``{parameter: number or parameter name}``, the experiment's own values of
  some parameters: known overrides (a dose, a temperature) or a reference to a
  condition-specific parameter (``{"scale": "scale_exp1"}``);
- ``dosing``: boluses (:class:`~physode.model.observables.Dose`), each adding an amount to
  a state variable at a known time;
- ``inputs``: ``{name: InputSeries}``, forcing given as data (times, values, kind), read in
  the vector field as ``self.input(name, t)``;
- ``preequilibration``: ``None``, or the condition (``{parameter: value}``, may be empty)
  under which the system is first brought to a steady state that then is the initial state.

Everything here is data: numbers, strings, arrays; nothing names code. The checks return
location-bearing sentences like :mod:`physode.data.schema`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from physode.errors import InvalidObservations
from physode.model.observables import Dose
from physode.model.system import System

#: Distributions and scales of a noise model (those of :mod:`physode.estimate.noise`).
NOISE_DISTRIBUTIONS = ("normal", "laplace")
NOISE_SCALES = ("lin", "log", "log10")
#: Interpolation kinds of an input series.
INPUT_KINDS = ("constant", "linear", "cubic")

ConditionValue = float | str


def _coef(value: Any, what: str) -> float | str:
    if isinstance(value, str):
        if not value.isidentifier():
            raise InvalidObservations(f"{what}: {value!r} is neither a number nor a "
                                      "parameter name")
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidObservations(f"{what}: {value!r} is neither a number nor a parameter "
                                  "name") from None
    if not math.isfinite(v) or v < 0:
        raise InvalidObservations(f"{what}: must be finite and >= 0, got {value!r}")
    return v


@dataclass(frozen=True)
class NoiseSpec:
    """Noise model of one observed output: ``sigma = a + b |prediction|`` on ``scale``.

    ``a`` and ``b`` are numbers (known) or parameter names (estimated). ``NoiseSpec(a=0.1)``
    is additive normal noise, ``NoiseSpec(a=0, b=0.1)`` proportional,
    ``NoiseSpec(a=0.05, b=0.1)`` combined, ``NoiseSpec("normal", "log", a=0.2)``
    log-normal, ``NoiseSpec("laplace", a="b_x")`` Laplace with an estimated scale."""

    distribution: str = "normal"
    scale: str = "lin"
    a: float | str = 1.0
    b: float | str = 0.0

    def __post_init__(self) -> None:
        if self.distribution not in NOISE_DISTRIBUTIONS:
            raise InvalidObservations(f"noise distribution {self.distribution!r} is not one "
                                      f"of {NOISE_DISTRIBUTIONS}")
        if self.scale not in NOISE_SCALES:
            raise InvalidObservations(f"noise scale {self.scale!r} is not one of "
                                      f"{NOISE_SCALES}")
        object.__setattr__(self, "a", _coef(self.a, "noise coefficient a"))
        object.__setattr__(self, "b", _coef(self.b, "noise coefficient b"))
        if self.a == 0.0 and self.b == 0.0:
            raise InvalidObservations("noise model with a = b = 0 gives sigma = 0 everywhere")

    @property
    def parameters(self) -> tuple[str, ...]:
        """The names of the estimated coefficients."""
        return tuple(c for c in (self.a, self.b) if isinstance(c, str))


@dataclass(frozen=True, eq=False)
class InputSeries:
    """Forcing as data: ``values`` (shape ``(n,)``) at strictly increasing ``times``,
    interpolated piecewise constant (the value holds from its time to the next), linear,
    or by a cubic spline (``kind``)."""

    times: np.ndarray
    values: np.ndarray
    kind: str = "linear"

    def __post_init__(self) -> None:
        t = np.asarray(self.times, dtype=np.float64).reshape(-1)
        v = np.asarray(self.values, dtype=np.float64)
        object.__setattr__(self, "times", t)
        object.__setattr__(self, "values", v)
        if self.kind not in INPUT_KINDS:
            raise InvalidObservations(f"input kind {self.kind!r} is not one of {INPUT_KINDS}")

    def problem(self) -> str | None:
        """What is wrong with the series (None when valid)."""
        t, v = self.times, self.values
        if t.size < 1 or (self.kind != "constant" and t.size < 2):
            return f"needs at least {1 if self.kind == 'constant' else 2} time(s), got {t.size}"
        if v.ndim < 1 or v.shape[0] != t.size:
            return f"values of shape {v.shape} do not start with the number of times {t.size}"
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(v))):
            return "times and values must be finite"
        if np.any(np.diff(t) <= 0):
            i = int(np.argmax(np.diff(t) <= 0))
            return (f"times must be strictly increasing (sorted, no repeats): time[{i + 1}] = "
                    f"{t[i + 1]!r} follows time[{i}] = {t[i]!r}")
        return None

    def equals(self, other: InputSeries) -> bool:
        return (self.kind == other.kind and np.array_equal(self.times, other.times)
                and np.array_equal(self.values, other.values))


def noise_spec(value: Any, where: str) -> NoiseSpec:
    """A :class:`NoiseSpec` from itself or a mapping of its fields."""
    if isinstance(value, NoiseSpec):
        return value
    if isinstance(value, Mapping):
        try:
            return NoiseSpec(**dict(value))
        except TypeError as exc:
            raise InvalidObservations(f"{where}: bad noise model {dict(value)} ({exc})") from None
    raise InvalidObservations(f"{where}: a noise model is a NoiseSpec or a dict of its "
                              f"fields, got {type(value).__name__}")


def condition_value(value: Any, where: str) -> ConditionValue | np.ndarray:
    """A condition entry: a parameter name, or a finite number (array) as float64."""
    if isinstance(value, str):
        if not value.isidentifier():
            raise InvalidObservations(f"{where}: {value!r} is not a parameter name")
        return value
    arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if arr.dtype.kind not in "fiu" or not np.all(np.isfinite(arr)):
        raise InvalidObservations(f"{where}: {value!r} is neither a finite number nor a "
                                  "parameter name")
    return float(arr) if arr.ndim == 0 else arr.astype(np.float64)


def normalize_conditions(values: Mapping[str, Any] | None,
                         where: str) -> dict[str, ConditionValue | np.ndarray]:
    return {str(k): condition_value(v, f"{where}[{k!r}]") for k, v in dict(values or {}).items()}


def normalize_dosing(doses: Any, where: str) -> list[Dose]:
    out = []
    for i, d in enumerate(list(doses or [])):
        if isinstance(d, Dose):
            out.append(d)
        elif isinstance(d, Mapping):
            try:
                out.append(Dose(**dict(d)))
            except (TypeError, ValueError) as exc:
                raise InvalidObservations(f"{where}[{i}]: bad dose {dict(d)} ({exc})") from None
        else:
            raise InvalidObservations(f"{where}[{i}]: a dose is a physode.Dose or a dict, got "
                                      f"{type(d).__name__}")
    return sorted(out, key=lambda d: d.time)


def normalize_inputs(inputs: Mapping[str, Any] | None, where: str) -> dict[str, InputSeries]:
    out = {}
    for name, s in dict(inputs or {}).items():
        if isinstance(s, InputSeries):
            out[str(name)] = s
        elif isinstance(s, Mapping):
            try:
                out[str(name)] = InputSeries(**dict(s))
            except TypeError as exc:
                raise InvalidObservations(f"{where}[{name!r}]: bad input series ({exc})") from None
        else:
            raise InvalidObservations(f"{where}[{name!r}]: an input is an InputSeries or a dict "
                                      f"(times, values, kind), got {type(s).__name__}")
    return out


def _param_names(system: System | None, declared: Mapping[str, Any]) -> set[str] | None:
    if system is None:
        return None
    return set(system.parameter_specs()) | set(declared)


def parts_violations(exp: Any, system: System | None, declared: Mapping[str, Any],
                     group: str, out: list[str]) -> None:
    """Append what is wrong with the schema-2 parts of experiment ``exp`` (``group`` is
    the location prefix ``"file: group '/experiments/<e>'"``)."""
    names = _param_names(system, declared)
    sysname = type(system).__name__ if system is not None else "the system"
    known = sorted(names) if names is not None else []
    for output, spec in exp.noise.items():
        if output not in exp.values:
            out.append(f"{group}/noise, dataset '{output}': noise model for {output!r}, which "
                       "is not observed")
        for p in spec.parameters:
            if names is not None and p not in names:
                out.append(f"{group}/noise, dataset '{output}': noise parameter {p!r} is "
                           f"neither a parameter of {sysname} nor declared in the file "
                           f"('/declarations'); known: {known}")
    conds = [("conditions", exp.conditions)]
    if exp.preequilibration is not None:
        conds.append(("preequilibration", exp.preequilibration))
    for part, mapping in conds:
        for key, value in mapping.items():
            where = f"{group}/{part}: attribute {key!r}"
            if names is not None and key not in names:
                out.append(f"{where}: {sysname} has no parameter {key!r} (its parameters: "
                           f"{known})")
            if isinstance(value, str) and names is not None and value not in names:
                out.append(f"{where}: refers to {value!r}, which is neither a parameter of "
                           f"{sysname} nor declared in the file")
    layout = system.layout if system is not None else None
    for i, d in enumerate(exp.dosing):
        where = f"{group}/dosing: dose {i} (t={d.time:g})"
        var = layout.by_name.get(d.target) if layout is not None else None
        if layout is not None and var is None:
            out.append(f"{where}: target {d.target!r} is not a state variable of {sysname} "
                       f"({list(layout.names)})")
        elif var is not None and d.index is not None and not 0 <= d.index < var.size:
            out.append(f"{where}: index {d.index} out of range for {d.target!r} of size "
                       f"{var.size}")
        elif var is not None and d.index is None and var.size != 1:
            out.append(f"{where}: {d.target!r} has {var.size} components; give the index")
        if isinstance(d.amount, str) and names is not None and d.amount not in names:
            out.append(f"{where}: amount {d.amount!r} is not a parameter of {sysname}")
        if d.time < exp.t0:
            out.append(f"{where}: the dose is before the experiment starts (t0={exp.t0:g})")
    for name, series in exp.inputs.items():
        problem = series.problem()
        if problem is not None:
            out.append(f"{group}/inputs/{name}: {problem}")
    if system is not None:
        missing = [n for n in system.input_names if n not in exp.inputs]
        if missing:
            out.append(f"{group}/inputs: {sysname} reads the input(s) {missing}, which the "
                       "experiment does not give")


def parts_equal(x: Any, y: Any) -> bool:
    """Whether two experiments' schema-2 parts are identical (conditions as mappings:
    HDF5 keeps attributes in name order, not in the order given)."""
    def cond_eq(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        return set(a) == set(b) and all(
            np.array_equal(np.asarray(a[k]), np.asarray(b[k])) if not isinstance(a[k], str)
            else a[k] == b[k] for k in a)

    if x.noise != y.noise or x.dosing != y.dosing or list(x.inputs) != list(y.inputs):
        return False
    if not all(x.inputs[k].equals(y.inputs[k]) for k in x.inputs):
        return False
    if (x.preequilibration is None) != (y.preequilibration is None):
        return False
    if x.preequilibration is not None and not cond_eq(x.preequilibration, y.preequilibration):
        return False
    return cond_eq(x.conditions, y.conditions)


__all__ = ["INPUT_KINDS", "NOISE_DISTRIBUTIONS", "NOISE_SCALES", "ConditionValue", "Dose",
           "InputSeries", "NoiseSpec", "condition_value", "noise_spec", "normalize_conditions",
           "normalize_dosing", "normalize_inputs", "parts_equal", "parts_violations"]
