"""Prior distributions of parameters: Normal, LogNormal, Laplace, Uniform.

A prior is declared on a parameter, ``physode.Parameter(0.3, positive=True,
prior=physode.priors.LogNormal(math.log(0.3), 0.5))``, and :func:`physode.fit` then
maximises the posterior: it minimises the negative log-likelihood of the data plus
``-log p(x)`` of every parameter with a prior (maximum a posteriori, Gelman et al.,
*Bayesian Data Analysis*, 3rd ed., 2013, sec. 4.1 and 13.3). The report says so.

Each prior is a density of ``z = T(x)``, with ``T`` the identity (``scale="linear"``), ``ln``
(``scale="log"``) or ``log10`` (``scale="log10"``): a prior "on the log scale" is a density
of ``ln x`` without the change-of-variables term, as PEtab's ``parameterScale*`` priors
(PEtab v1 specification, "Prior distributions"). :class:`LogNormal` is the exception in
name only: it is the density of ``x`` itself whose logarithm is normal, so its negative
log-density includes ``ln x`` (the Jacobian), as PEtab's ``logNormal``.

For least-squares optimisers a prior also gives residuals ``r`` with
``½ Σ r² = -log p(x) + const`` (:meth:`Prior.residuals`): ``(z - mu)/sigma`` for a
normal prior, ``sign(d) sqrt(2|d|/b)`` for Laplace, and the log-term ``ln x`` of the
log-normal as ``sqrt(2 (ln x + K))`` with the constant :data:`LOG_OFFSET` ``K``, the
residual form of a parameter-dependent constant used by Data2Dynamics (Raue et al.,
Bioinformatics 31:3558, 2015, "error model fitting"); a uniform prior is flat inside its
support and gives no residual (its support is enforced through the parameter's bounds).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from physode.errors import InvalidSystem

#: Scales a prior may be declared on: the density is of x, ln x or log10 x.
PRIOR_SCALES = ("linear", "log", "log10")
#: K in ``sqrt(2 (ln v + K))``: the residual form of a log-term is real for v > exp(-K).
LOG_OFFSET = 50.0


def _number(value: Any, what: str, *, positive: bool = False) -> float:
    try:
        if isinstance(value, (bool, str)):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidSystem(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or (positive and v <= 0):
        raise InvalidSystem(f"{what} must be {'positive and ' if positive else ''}finite, "
                            f"got {value!r}")
    return v


def log_term_residual(v: Tensor, where: str = "") -> Tensor:
    """``sqrt(2 (ln v + K))`` elementwise, so that ``½ r² = ln v + K``; ``v`` must exceed
    ``exp(-K)`` (about 2e-22), else the residual is NaN and the point is refused."""
    arg = 2.0 * (torch.log(v) + LOG_OFFSET)
    return torch.sqrt(torch.where(arg > 0, arg, torch.full_like(arg, math.nan)))


class Prior:
    """Base class: a density of ``z = T(x)`` (see the module docstring).

    Subclasses define :meth:`_nllh_z` (negative log-density of z, constants included),
    :meth:`_residuals_z` and :meth:`params`.
    """

    kind: str = ""

    def __init__(self, scale: str = "linear") -> None:
        if scale not in PRIOR_SCALES:
            raise InvalidSystem(f"prior scale must be one of {PRIOR_SCALES}, got {scale!r}")
        self.scale = scale

    # ---------------------------------------------------------------- interface
    def params(self) -> dict[str, float]:
        """The distribution's parameters by name (for reports and files)."""
        raise NotImplementedError

    def _nllh_z(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def _residuals_z(self, z: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def to_z(self, x: Tensor) -> Tensor:
        """``T(x)``: x, ln x or log10 x."""
        if self.scale == "linear":
            return x
        return torch.log(x) if self.scale == "log" else torch.log10(x)

    def nllh(self, x: Tensor) -> Tensor:
        """``-log p`` summed over the elements of ``x`` (a 0-d tensor, differentiable)."""
        return self._nllh_z(self.to_z(x)).sum()

    def residuals(self, x: Tensor) -> Tensor:
        """Flat residuals with ``½ Σ r² = nllh(x) - constant`` (differentiable)."""
        parts = self._residuals_z(self.to_z(x))
        return torch.cat([p.reshape(-1) for p in parts]) if parts else x.reshape(-1)[:0]

    def check(self, x: Tensor, name: str) -> None:
        """Refuse a parameter value outside the prior's support, naming the parameter."""
        if self.scale != "linear" and not bool((x > 0).all()):
            raise InvalidSystem(f"parameter {name!r}: a prior on the {self.scale} scale needs "
                                f"positive values, got {x.tolist()}")

    def describe(self) -> dict[str, Any]:
        """``{"kind", "scale", **params}``: the prior as plain data."""
        return {"kind": self.kind, "scale": self.scale, **self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params().items())
        extra = "" if self.scale == "linear" else f", scale={self.scale!r}"
        return f"{type(self).__name__}({args}{extra})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prior) and self.describe() == other.describe()

    def __hash__(self) -> int:
        return hash(tuple(self.describe().items()))


class Normal(Prior):
    """Normal prior N(mu, sigma²) of ``T(x)``."""

    kind = "normal"

    def __init__(self, mu: float, sigma: float, *, scale: str = "linear") -> None:
        super().__init__(scale)
        self.mu = _number(mu, "Normal prior mu")
        self.sigma = _number(sigma, "Normal prior sigma", positive=True)

    def params(self) -> dict[str, float]:
        return {"mu": self.mu, "sigma": self.sigma}

    def _nllh_z(self, z: Tensor) -> Tensor:
        return 0.5 * math.log(2 * math.pi * self.sigma**2) + 0.5 * ((z - self.mu)
                                                                    / self.sigma) ** 2

    def _residuals_z(self, z: Tensor) -> list[Tensor]:
        return [(z - self.mu) / self.sigma]


class LogNormal(Prior):
    """Log-normal prior of x: ``ln x ~ N(mu, sigma²)``; a density of x (includes ``ln x``)."""

    kind = "lognormal"

    def __init__(self, mu: float, sigma: float) -> None:
        super().__init__("linear")
        self.mu = _number(mu, "LogNormal prior mu")
        self.sigma = _number(sigma, "LogNormal prior sigma", positive=True)

    def params(self) -> dict[str, float]:
        return {"mu": self.mu, "sigma": self.sigma}

    def check(self, x: Tensor, name: str) -> None:
        if not bool((x > 0).all()):
            raise InvalidSystem(f"parameter {name!r}: a LogNormal prior needs positive "
                                f"values, got {x.tolist()}")

    def _nllh_z(self, z: Tensor) -> Tensor:
        lx = torch.log(z)
        return (lx + 0.5 * math.log(2 * math.pi * self.sigma**2)
                + 0.5 * ((lx - self.mu) / self.sigma) ** 2)

    def _residuals_z(self, z: Tensor) -> list[Tensor]:
        return [(torch.log(z) - self.mu) / self.sigma, log_term_residual(z)]


class Laplace(Prior):
    """Laplace prior of ``T(x)`` with location mu and scale b: ``p = exp(-|z-mu|/b) / 2b``."""

    kind = "laplace"

    def __init__(self, mu: float, b: float, *, scale: str = "linear") -> None:
        super().__init__(scale)
        self.mu = _number(mu, "Laplace prior mu")
        self.b = _number(b, "Laplace prior b", positive=True)

    def params(self) -> dict[str, float]:
        return {"mu": self.mu, "b": self.b}

    def _nllh_z(self, z: Tensor) -> Tensor:
        return math.log(2 * self.b) + torch.abs(z - self.mu) / self.b

    def _residuals_z(self, z: Tensor) -> list[Tensor]:
        d = z - self.mu
        return [torch.sign(d) * torch.sqrt(2 * torch.abs(d) / self.b
                                           + torch.finfo(d.dtype).tiny)]


class Uniform(Prior):
    """Uniform prior of ``T(x)`` on ``[lower, upper]``: flat inside, impossible outside."""

    kind = "uniform"

    def __init__(self, lower: float, upper: float, *, scale: str = "linear") -> None:
        super().__init__(scale)
        self.lower = _number(lower, "Uniform prior lower")
        self.upper = _number(upper, "Uniform prior upper")
        if not self.lower < self.upper:
            raise InvalidSystem(f"Uniform prior needs lower < upper, got ({lower}, {upper})")

    def params(self) -> dict[str, float]:
        return {"lower": self.lower, "upper": self.upper}

    def _nllh_z(self, z: Tensor) -> Tensor:
        inside = (z >= self.lower) & (z <= self.upper)
        value = torch.full_like(z, math.log(self.upper - self.lower))
        return torch.where(inside, value, torch.full_like(z, math.inf))

    def _residuals_z(self, z: Tensor) -> list[Tensor]:
        return []

    def check(self, x: Tensor, name: str) -> None:
        super().check(x, name)
        z = self.to_z(x)
        if not bool(((z >= self.lower) & (z <= self.upper)).all()):
            raise InvalidSystem(f"parameter {name!r}: value {x.tolist()} is outside its "
                                f"Uniform prior's support [{self.lower:g}, {self.upper:g}]"
                                + ("" if self.scale == "linear" else f" ({self.scale} scale)"))

    def support(self) -> tuple[float, float]:
        """The support in x (for a prior on a log scale, mapped back)."""
        if self.scale == "linear":
            return self.lower, self.upper
        base = math.e if self.scale == "log" else 10.0
        return base**self.lower, base**self.upper


PRIORS: dict[str, type[Prior]] = {"normal": Normal, "lognormal": LogNormal,
                                  "laplace": Laplace, "uniform": Uniform}


def prior_from(description: dict[str, Any], where: str) -> Prior:
    """Rebuild a prior from :meth:`Prior.describe` data (read from a file), looked up in
    :data:`PRIORS` by ``kind``; a bad description is an InvalidSystem naming ``where``."""
    data = dict(description)
    kind = data.pop("kind", None)
    cls = PRIORS.get(str(kind))
    if cls is None:
        raise InvalidSystem(f"{where}: unknown prior kind {kind!r}; one of {sorted(PRIORS)}")
    scale = data.pop("scale", "linear")
    try:
        if cls is LogNormal:
            if scale != "linear":
                raise InvalidSystem("a LogNormal prior has no scale")
            return LogNormal(**data)
        return cls(**data, scale=scale)
    except TypeError as exc:
        raise InvalidSystem(f"{where}: bad {kind} prior parameters {data} ({exc})") from None
    except InvalidSystem as exc:
        raise InvalidSystem(f"{where}: {exc}") from None


__all__ = ["LOG_OFFSET", "PRIORS", "PRIOR_SCALES", "Laplace", "LogNormal", "Normal", "Prior",
           "Uniform", "log_term_residual", "prior_from"]
