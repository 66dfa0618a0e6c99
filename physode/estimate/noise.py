"""Measurement noise models: the likelihood of one measurement given its simulation.

A noise model is a distribution (normal or Laplace) applied on a scale (``lin``, ``log``
or ``log10``): on a log scale the residual is ``log(sim) - log(meas)`` and the density is
that of a log-normal (log-Laplace) variable, so the change-of-variables term ``log(meas)``
(``log(meas ln 10)`` for log10) enters the negative log-likelihood. The normalisation
constants are always included, so values compare with PEtab/AMICI numbers (PEtab v1
specification, "Noise distributions"; Schmiester et al., PLoS Comput Biol 17:e1008646,
2021):

============ ======= =================================================================
distribution scale   negative log-likelihood of one measurement m, simulation s
============ ======= =================================================================
normal       lin     ``½ log(2π σ²) + ½ ((s − m)/σ)²``
normal       log     ``½ log(2π σ² m²) + ½ ((ln s − ln m)/σ)²``
normal       log10   ``½ log(2π σ² m² ln²10) + ½ ((log10 s − log10 m)/σ)²``
laplace      lin     ``log(2σ) + |s − m|/σ``
laplace      log     ``log(2σ m) + |ln s − ln m|/σ``
laplace      log10   ``log(2σ m ln 10) + |log10 s − log10 m|/σ``
============ ======= =================================================================

σ is the noise parameter on the model's scale: a standard deviation (normal) or the scale
``b`` (Laplace). Proportional and combined noise are σ formulas, not distributions:
:func:`combined_sigma` gives ``σ = a + b·abs(ŷ)`` (``a = 0``: proportional).

For least-squares optimisers (Levenberg–Marquardt, Gauss–Newton covariance)
:meth:`NoiseModel.residuals` returns residuals ``r`` with ``½ Σ r²`` equal to the
σ-independent-of-data part of the likelihood: ``(T(s) − T(m))/σ`` for normal noise, and
``sign(d) sqrt(2 |d| / σ)`` for Laplace noise (a reformulation that makes ``½ Σ r²`` exact
but whose Jacobian is singular at ``d = 0``, so Laplace problems are better fitted with a
gradient optimiser such as L-BFGS). With σ estimated, the constants ``log σ`` depend on the
parameters: minimise :meth:`NoiseModel.nllh`, not χ².
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from physode.errors import InvalidObservations

DISTRIBUTIONS = ("normal", "laplace")
SCALES = ("lin", "log", "log10")

_ALIASES: dict[str, tuple[str, str]] = {
    "normal": ("normal", "lin"),
    "gaussian": ("normal", "lin"),
    "laplace": ("laplace", "lin"),
    "lognormal": ("normal", "log"),
    "log-normal": ("normal", "log"),
    "log10-normal": ("normal", "log10"),
    "log10normal": ("normal", "log10"),
    "log-laplace": ("laplace", "log"),
    "log10-laplace": ("laplace", "log10"),
}
_LN10 = math.log(10.0)


@dataclass(frozen=True)
class NoiseModel:
    """A noise distribution on a scale: ``NoiseModel("normal", "log10")``.

    ``distribution`` is "normal" or "laplace"; ``scale`` is "lin", "log" (natural) or
    "log10". :meth:`parse` also takes the usual single names ("lognormal",
    "log10-normal", "laplace", ...).
    """

    distribution: str = "normal"
    scale: str = "lin"

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise InvalidObservations(f"noise distribution {self.distribution!r} is not one "
                                      f"of {', '.join(DISTRIBUTIONS)}")
        if self.scale not in SCALES:
            raise InvalidObservations(f"noise scale {self.scale!r} is not one of "
                                      f"{', '.join(SCALES)}")

    @classmethod
    def parse(cls, name: str, scale: str | None = None) -> NoiseModel:
        """A noise model from a name ("normal", "log10-normal", ...) and optional scale.

        An explicit ``scale`` (PEtab's ``observableTransformation``) overrides the scale
        the name implies; a log-scale name with a conflicting explicit scale is an error.
        """
        key = name.strip().lower()
        if key not in _ALIASES:
            raise InvalidObservations(f"unknown noise model {name!r}: use one of "
                                      f"{', '.join(sorted(_ALIASES))}")
        distribution, implied = _ALIASES[key]
        if scale is None or scale == implied:
            return cls(distribution, implied)
        if implied != "lin":
            raise InvalidObservations(f"noise model {name!r} is on the {implied} scale but "
                                      f"scale {scale!r} was given")
        return cls(distribution, scale)

    @property
    def name(self) -> str:
        """The conventional name: "normal", "log10-normal", "laplace", ..."""
        return self.distribution if self.scale == "lin" else f"{self.scale}-{self.distribution}"

    def transform(self, x: Tensor) -> Tensor:
        """``x`` on the model's scale (identity, ln or log10)."""
        if self.scale == "lin":
            return x
        return torch.log(x) if self.scale == "log" else torch.log10(x)

    def _jacobian_term(self, meas: Tensor) -> Tensor:
        """log |dT/dm|⁻¹: the change-of-variables term of a log-scale density."""
        if self.scale == "lin":
            return torch.zeros_like(meas)
        if self.scale == "log":
            return torch.log(meas)
        return torch.log(meas * _LN10)

    def nllh_terms(self, sim: Tensor, meas: Tensor, sigma: Tensor | float) -> Tensor:
        """Elementwise negative log-likelihood, normalisation constants included.

        ``sim``, ``meas`` and ``sigma`` broadcast; NaN measurements (missing values)
        contribute 0. On a log scale a measurement must be positive (checked by
        :func:`check_measurements`); a non-positive simulation gives ``inf``.
        """
        sigma_t = torch.as_tensor(sigma, dtype=sim.dtype, device=sim.device)
        present = ~torch.isnan(meas)
        m = torch.where(present, meas, torch.ones_like(meas))
        d = self.transform(sim) - self.transform(m)
        if self.distribution == "normal":
            terms = (0.5 * torch.log(2 * math.pi * sigma_t**2) + 0.5 * (d / sigma_t) ** 2
                     + self._jacobian_term(m))
        else:
            terms = torch.log(2 * sigma_t) + torch.abs(d) / sigma_t + self._jacobian_term(m)
        if self.scale != "lin":
            terms = torch.where(sim > 0, terms, torch.full_like(terms, math.inf))
        return torch.where(present, terms, torch.zeros_like(terms))

    def nllh(self, sim: Tensor, meas: Tensor, sigma: Tensor | float) -> Tensor:
        """The summed negative log-likelihood (a 0-d tensor)."""
        return self.nllh_terms(sim, meas, sigma).sum()

    def residuals(self, sim: Tensor, meas: Tensor, sigma: Tensor | float) -> Tensor:
        """Least-squares residuals: ``½ Σ r²`` is the data-dependent part of :meth:`nllh`.

        Missing (NaN) measurements give residual 0.
        """
        sigma_t = torch.as_tensor(sigma, dtype=sim.dtype, device=sim.device)
        present = ~torch.isnan(meas)
        m = torch.where(present, meas, torch.ones_like(meas))
        d = self.transform(sim) - self.transform(m)
        if self.distribution == "normal":
            r = d / sigma_t
        else:  # 2|d|/σ = r²; the tiny floor keeps the square root's derivative finite
            r = torch.sign(d) * torch.sqrt(2 * torch.abs(d) / sigma_t
                                           + torch.finfo(d.dtype).tiny)
        return torch.where(present, r, torch.zeros_like(r))

    def constants(self, meas: Tensor, sigma: Tensor | float) -> Tensor:
        """Σ of the normalisation terms: ``nllh = ½ Σ r² + constants`` (for any σ)."""
        sigma_t = torch.as_tensor(sigma, dtype=meas.dtype, device=meas.device)
        present = ~torch.isnan(meas)
        m = torch.where(present, meas, torch.ones_like(meas))
        if self.distribution == "normal":
            c = 0.5 * torch.log(2 * math.pi * sigma_t**2) + self._jacobian_term(m)
        else:
            c = torch.log(2 * sigma_t) + self._jacobian_term(m)
        c = c.expand(torch.broadcast_shapes(c.shape, m.shape))
        return torch.where(present, c, torch.zeros_like(c)).sum()

    def check_measurements(self, meas: Tensor, where: str) -> None:
        """Refuse non-positive measurements on a log scale, naming ``where``."""
        if self.scale == "lin":
            return
        present = meas[~torch.isnan(meas)]
        if bool((present <= 0).any()):
            bad = float(present[present <= 0][0])
            raise InvalidObservations(f"{where}: the {self.name} noise model needs positive "
                                      f"measurements, found {bad:g}")


def combined_sigma(a: Tensor | float, b: Tensor | float, prediction: Tensor) -> Tensor:
    """``σ = a + b·abs(ŷ)``: additive (``b = 0``), proportional (``a = 0``) or combined."""
    return a + b * torch.abs(prediction)


def check_sigma(sigma: Tensor, where: str) -> None:
    """Refuse σ ≤ 0 or non-finite σ, naming ``where`` (an experiment and observable)."""
    bad = ~torch.isfinite(sigma) | (sigma <= 0)
    if bool(bad.any()):
        index = tuple(int(i) for i in torch.nonzero(bad)[0])
        value = float(sigma[index]) if sigma.dim() else float(sigma)
        raise InvalidObservations(f"{where}: the noise model gives sigma = {value:g} at index "
                                  f"{index}; sigma must be positive and finite")


__all__ = ["DISTRIBUTIONS", "SCALES", "NoiseModel", "check_sigma", "combined_sigma"]
