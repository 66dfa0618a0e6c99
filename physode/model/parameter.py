"""Declared parameters of a physical system and their unconstrained transforms.

A :class:`Parameter` is the *declaration* of one unknown (or known) quantity: its initial
value, its constraints, its units. The :class:`~physode.model.system.System` stores it in
unconstrained form so that any optimiser step, however large, lands on a valid physical
value — the usual reparametrisation trick of constrained maximum likelihood (e.g. Stan
Reference Manual, "Constraint transforms"; lmfit's "bounds implementation"):

==============================  =======================================  =================
declaration                     physical value x from unconstrained u    domain of x
==============================  =======================================  =================
plain                           x = u                                    (-inf, inf)
``positive`` or ``scale=log``   x = exp(u)                               (0, inf)
``bounds=(lo, hi)``             x = lo + (hi - lo) * sigmoid(u)          (lo, hi)
``bounds`` and ``scale=log``    log x = log lo + log(hi/lo) sigmoid(u)   (lo, hi), lo > 0
``bounds=(lo, inf)``            x = lo + exp(u)                          (lo, inf)
``bounds=(-inf, hi)``           x = hi - exp(u)                          (-inf, hi)
==============================  =======================================  =================

In floating point the maps reach the closed interval only at extreme u (``|u| > ~37`` for the
logistic, u < -745 for exp); any moderate u lands strictly inside. A declared value must be
strictly inside its domain, since the boundary has no finite unconstrained preimage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from physode.errors import InvalidSystem
from physode.model.priors import Prior

_SCALES = ("linear", "log")


def as_float64_tensor(value: Any, what: str) -> Tensor:
    """Convert a number, sequence, array or tensor to a float64 tensor, or raise InvalidSystem.

    Tensors keep their device; everything else is created on the CPU (the System's
    ``.to(device)`` moves it later).
    """
    try:
        if isinstance(value, Tensor):
            out = value.detach().to(torch.float64).clone()
        else:
            out = torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidSystem(
            f"{what}: cannot convert {value!r} to a float64 tensor ({exc})"
        ) from None
    return out


class Parameter:
    """Declaration of a system parameter: value, constraints, units.

    Args:
        value: initial (or known) physical value; a number or an array (e.g. the masses of
            all bodies as one parameter of shape ``(n,)``).
        positive: the value must be > 0; stored as ``log(value)``.
        bounds: ``(lo, hi)`` (either may be infinite); stored through a scaled logistic
            (or the one-sided exponential shifts above). Applied element-wise. For a
            positive parameter a negative ``lo`` is raised to 0.
        fixed: a known constant: stored as a buffer, never fitted, not in the free vector.
        scale: ``"linear"`` or ``"log"``. ``"log"`` implies ``positive`` and makes bounded
            parameters logistic in ``log x``; multistart samples it log-uniformly.
        units: unit string carried into reports, HDF5 and xarray ``attrs["units"]``.
        description: one line for reports.
        prior: a :class:`~physode.model.priors.Prior` (Normal, LogNormal, Laplace, Uniform);
            :func:`physode.fit` then maximises the posterior (see :mod:`physode.model.priors`).
        name: normally set by the System (class attribute name or ``add_parameter``);
            given here it only makes construction errors name the parameter.

    Used as a class attribute of a System subclass it also acts as a descriptor:
    ``self.length`` inside ``vector_field`` is the current physical value (a tensor that
    carries gradients), and ``MySystem.length`` is the declaration.
    """

    def __init__(
        self,
        value: Any,
        *,
        positive: bool = False,
        bounds: tuple[float, float] | None = None,
        fixed: bool = False,
        scale: str = "linear",
        units: str | None = None,
        description: str | None = None,
        prior: Prior | None = None,
        name: str | None = None,
    ) -> None:
        self.name: str | None = name
        if prior is not None and not isinstance(prior, Prior):
            raise InvalidSystem(f"prior must be a physode.priors.Prior (Normal, LogNormal, "
                                f"Laplace, Uniform), got {type(prior).__name__}")
        self.prior = prior
        if scale not in _SCALES:
            raise InvalidSystem(f"parameter scale must be one of {_SCALES}, got {scale!r}")
        self.scale = scale
        self.positive = bool(positive) or scale == "log"
        self.fixed = bool(fixed)
        self.units = units
        self.description = description
        if bounds is not None:
            try:
                lo, hi = (float(b) for b in bounds)
            except (TypeError, ValueError):
                raise InvalidSystem(
                    f"bounds must be a pair (lo, hi) of numbers, got {bounds!r}"
                ) from None
            if math.isnan(lo) or math.isnan(hi) or not lo < hi:
                raise InvalidSystem(f"bounds must satisfy lo < hi, got {bounds!r}")
            if self.positive and hi <= 0:
                raise InvalidSystem(f"positive parameter with upper bound {hi} <= 0: empty domain")
            bounds = (lo, hi)
        self.bounds: tuple[float, float] | None = bounds
        self.value = as_float64_tensor(value, "parameter value")
        self.check(self.value)
        if prior is not None:
            prior.check(self.value, name or "?")

    # ------------------------------------------------------------------ metadata
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def lower(self) -> float:
        """Effective lower limit of the physical domain (0 for positive parameters)."""
        lo = -math.inf if self.bounds is None else self.bounds[0]
        return max(lo, 0.0) if self.positive else lo

    @property
    def upper(self) -> float:
        """Effective upper limit of the physical domain."""
        return math.inf if self.bounds is None else self.bounds[1]

    @property
    def transform(self) -> str:
        """Name of the unconstrained map: identity, exp, logistic, log-logistic, lower, upper."""
        lo, hi = self.lower, self.upper
        if math.isinf(lo) and math.isinf(hi):
            return "identity"
        if math.isfinite(lo) and math.isfinite(hi):
            return "log-logistic" if self.scale == "log" and lo > 0 else "logistic"
        if math.isfinite(hi):
            return "upper"
        return "exp" if lo == 0.0 and self.bounds is None else "lower"

    def describe(self) -> dict[str, Any]:
        """The declaration as plain data, for reports and file attributes."""
        return {
            "name": self.name,
            "value": self.value.tolist(),
            "shape": self.shape,
            "positive": self.positive,
            "bounds": self.bounds,
            "fixed": self.fixed,
            "scale": self.scale,
            "units": self.units,
            "description": self.description,
            "transform": self.transform,
            "prior": None if self.prior is None else self.prior.describe(),
        }

    def replace(self, **changes: Any) -> Parameter:
        """A copy with some fields changed (``value``, ``fixed``, ``bounds``, ...)."""
        kw: dict[str, Any] = {
            "positive": self.positive,
            "bounds": self.bounds,
            "fixed": self.fixed,
            "scale": self.scale,
            "units": self.units,
            "description": self.description,
            "prior": self.prior,
        }
        value = changes.pop("value", self.value)
        unknown = set(changes) - set(kw)
        if unknown:
            raise InvalidSystem(f"Parameter has no field(s) {sorted(unknown)}")
        kw.update(changes)
        return Parameter(value, name=self.name, **kw)

    def __repr__(self) -> str:
        extras = []
        if self.positive:
            extras.append("positive=True")
        if self.bounds is not None:
            extras.append(f"bounds={self.bounds}")
        if self.fixed:
            extras.append("fixed=True")
        if self.scale != "linear":
            extras.append(f"scale={self.scale!r}")
        if self.units:
            extras.append(f"units={self.units!r}")
        if self.prior is not None:
            extras.append(f"prior={self.prior!r}")
        value = self.value.item() if self.value.dim() == 0 else self.value.tolist()
        return f"Parameter({', '.join([repr(value), *extras])})"

    # ------------------------------------------------------------------ validation
    def check(self, value: Tensor, name: str | None = None) -> None:
        """Raise InvalidSystem unless ``value`` is finite and strictly inside the domain."""
        name = name or self.name
        label = f"parameter {name!r}" if name else "parameter"
        if value.shape != self.value.shape and not (self.value.dim() == 0 and value.numel() == 1):
            raise InvalidSystem(
                f"{label}: expected a value of shape {tuple(self.value.shape)}, "
                f"got {tuple(value.shape)}"
            )
        v = value.detach()
        if not bool(torch.isfinite(v).all()):
            raise InvalidSystem(f"{label}: value must be finite, got {_fmt(v)}")
        if self.positive and not bool((v > 0).all()):
            raise InvalidSystem(f"{label} is positive, got non-positive value {_fmt(v)}")
        if self.bounds is not None and not self.fixed:
            lo, hi = self.bounds
            if not bool(((v > lo) & (v < hi)).all()):
                raise InvalidSystem(
                    f"{label}: bounds {self.bounds} exclude the value {_fmt(v)} "
                    "(it must lie strictly inside)"
                )
        elif self.bounds is not None:
            lo, hi = self.bounds
            if not bool(((v >= lo) & (v <= hi)).all()):
                raise InvalidSystem(f"{label}: bounds {self.bounds} exclude the value {_fmt(v)}")

    # ------------------------------------------------------------------ transforms
    def to_physical(self, u: Tensor) -> Tensor:
        """Map an unconstrained tensor to the physical value (differentiable)."""
        kind = self.transform
        lo, hi = self.lower, self.upper
        if kind == "identity":
            return u
        if kind == "exp":
            return torch.exp(u)
        # The clamp only guards against rounding past a bound when sigmoid saturates; inside
        # the domain it passes values and gradients through unchanged.
        if kind == "logistic":
            return torch.clamp(lo + (hi - lo) * torch.sigmoid(u), lo, hi)
        if kind == "log-logistic":
            llo, lhi = math.log(lo), math.log(hi)
            return torch.clamp(torch.exp(llo + (lhi - llo) * torch.sigmoid(u)), lo, hi)
        if kind == "lower":
            return lo + torch.exp(u)
        return hi - torch.exp(u)

    def to_unconstrained(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`to_physical` for a value strictly inside the domain."""
        kind = self.transform
        lo, hi = self.lower, self.upper
        if kind == "identity":
            return x
        if kind == "exp":
            return torch.log(x)
        if kind == "logistic":
            return _logit((x - lo) / (hi - lo))
        if kind == "log-logistic":
            llo, lhi = math.log(lo), math.log(hi)
            return _logit((torch.log(x) - llo) / (lhi - llo))
        if kind == "lower":
            return torch.log(x - lo)
        return torch.log(hi - x)

    # ------------------------------------------------------------------ descriptor
    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.param(self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        if self.name is None:
            raise InvalidSystem("a Parameter must be declared as a class attribute to be set")
        obj.set_params(**{self.name: value})


def _logit(p: Tensor) -> Tensor:
    return torch.log(p) - torch.log1p(-p)


def _fmt(v: Tensor) -> str:
    return repr(v.item()) if v.numel() == 1 else repr(v.tolist())


def coerce_parameter(value: Any, name: str) -> Parameter:
    """A Parameter from a declaration or a bare value (a bare value gives a plain parameter)."""
    spec = value if isinstance(value, Parameter) else Parameter(value)
    spec = spec.replace()
    spec.name = name
    spec.check(spec.value, name)
    return spec


def labels_for(name: str, shape: Sequence[int]) -> list[str]:
    """Element labels ``name``, or ``name[i]``/``name[i,j]`` for array parameters (C order)."""
    if len(shape) == 0:
        return [name]
    return [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


__all__ = ["Parameter", "as_float64_tensor", "coerce_parameter", "labels_for"]
