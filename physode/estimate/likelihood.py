"""The objective of a fit: the negative log-likelihood of the data (noise models), plus priors.

Every observed output (a state variable or an observable) of every experiment is a
:class:`Series` with a noise model (:mod:`physode.estimate.noise`): a distribution on a
scale with ``sigma = a + b |prediction|``, ``a`` and ``b`` known or estimated. Data without
a noise model keep the weighted least squares of schema 1: normal noise with the recorded
``sigma``, or ``sigma = 1`` and one shared noise level estimated afterwards.

The objective is ``-log L(theta) - log p(theta)``, normalisation constants included
(PEtab v1 specification, "Objective function"). Optimisers see it as half a sum of
squares of one residual vector, in this order:

1. data residuals ``r`` (``(T(sim) - T(meas)) / sigma`` for normal noise, the square-root
   form for Laplace noise, :meth:`NoiseModel.residuals`); ``Σ r²`` is the chi-square;
2. for every point whose sigma depends on the fit (an estimated coefficient or a
   proportional part), ``sqrt(2 (ln sigma + K))`` (:func:`physode.model.priors.log_term_residual`,
   the Data2Dynamics form of the ``ln sigma`` term; Raue et al., Bioinformatics 31:3558,
   2015), so that the likelihood, not the chi-square, is minimised when sigma is fitted;
3. the residuals of the priors (:meth:`physode.model.priors.Prior.residuals`).

Then ``½ Σ residual² = objective + constant`` exactly, so Levenberg-Marquardt, L-BFGS and
Adam minimise the same function, and the Gauss-Newton covariance is the inverse
Gauss-Newton Hessian of the objective (for priors: the Laplace approximation of the
posterior; Gelman et al., *Bayesian Data Analysis*, 3rd ed., sec. 4.1). The exact value of
the objective, constants included, is :func:`objective_value`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from physode.data.experiment_parts import NoiseSpec
from physode.data.observations import Experiment
from physode.estimate.noise import NoiseModel, check_sigma, combined_sigma
from physode.model.priors import log_term_residual
from physode.model.system import System


@dataclass
class Series:
    """One observed output of one experiment, prepared for residuals."""

    exp: int
    var: str
    #: the slice of the flat state when ``var`` is a state variable, else None (observable)
    state: slice | None
    shape: tuple[int, ...]
    index: list[tuple[int, Tensor]]
    #: observed values, NaN where missing
    obs: Tensor
    valid: Tensor
    #: flat positions of the valid points
    where: Tensor
    count: int
    noise: NoiseModel
    #: sigma coefficients: tensors (known) or parameter names (estimated)
    a: Tensor | str
    b: Tensor | str
    #: sigma depends on the fitted values (a ln-sigma residual per point is needed)
    varying: bool
    label: str


def make_series(system: System, e: int, exp: Experiment, name: str, values: np.ndarray,
                device: torch.device) -> tuple[Series, bool]:
    """The :class:`Series` of output ``name`` of experiment ``exp``; the flag is True when
    neither a noise model nor sigma is given (sigma = 1, estimated afterwards)."""
    var = system.output_var(name)
    assert var is not None  # the observations were validated against the system
    is_state = name in system.layout.by_name
    index = [(var.dims.index(d), torch.as_tensor(p, dtype=torch.long, device=device))
             for d, p in exp.index.get(name, {}).items()]
    obs = torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)
    valid = torch.isfinite(obs)
    if name in exp.mask:
        valid &= ~torch.as_tensor(exp.mask[name], device=device)
    obs = torch.where(valid, obs, torch.full_like(obs, float("nan")))
    label = f"experiment {exp.name!r}, output {name!r}"
    spec: NoiseSpec | None = exp.noise.get(name)
    missing = False
    if spec is None:
        sigma = exp.sigma.get(name)
        missing = sigma is None
        a: Tensor | str = torch.ones((), dtype=torch.float64, device=device) if sigma is None \
            else torch.as_tensor(np.broadcast_to(sigma, values.shape).copy(),
                                 dtype=torch.float64, device=device)
        b: Tensor | str = torch.zeros((), dtype=torch.float64, device=device)
        model = NoiseModel()
    else:
        model = NoiseModel(spec.distribution, spec.scale)
        model.check_measurements(obs[valid], f"{label}, field 'values'")
        a = spec.a if isinstance(spec.a, str) else torch.tensor(spec.a, dtype=torch.float64,
                                                                device=device)
        b = spec.b if isinstance(spec.b, str) else torch.tensor(spec.b, dtype=torch.float64,
                                                                device=device)
    varying = isinstance(a, str) or isinstance(b, str) or bool((b != 0).any())
    where = torch.nonzero(valid.reshape(-1)).reshape(-1)
    series = Series(e, name, system.layout.slices[name] if is_state else None, var.shape,
                    index, obs, valid, where, int(valid.sum()), model, a, b, varying, label)
    return series, missing


def select(s: Series, x: Tensor, lead: int) -> Tensor:
    """Observed components of an output: ``x`` is ``(*lead dims, *output shape)``."""
    for axis, pos in s.index:
        x = x.index_select(lead + axis, pos)
    return x


def series_sigma(system: System, s: Series, pred: Tensor) -> Tensor:
    """sigma of every point of ``s`` (the values' shape), given the prediction."""
    a = system.param(s.a) if isinstance(s.a, str) else s.a
    b = system.param(s.b) if isinstance(s.b, str) else s.b
    return torch.broadcast_to(combined_sigma(a, b, pred), pred.shape)


def series_residuals(system: System, s: Series, pred: Tensor, check: bool
                     ) -> tuple[Tensor, Tensor | None, Tensor]:
    """(data residuals, ln-sigma residuals or None, nllh terms) at the valid points."""
    sigma = series_sigma(system, s, pred)
    if check:
        check_sigma(sigma.detach()[s.valid], f"{s.label}, field 'noise'")
    r = s.noise.residuals(pred, s.obs, sigma).reshape(-1).index_select(0, s.where)
    terms = s.noise.nllh_terms(pred, s.obs, sigma).reshape(-1).index_select(0, s.where)
    q = None
    if s.varying:
        q = log_term_residual(sigma.reshape(-1).index_select(0, s.where))
    return r, q, terms


def prior_terms(system: System) -> tuple[list[Tensor], Tensor]:
    """(residuals of each free parameter's prior, their summed nllh)."""
    specs = system.parameter_specs()
    res: list[Tensor] = []
    total = torch.zeros((), dtype=torch.float64)
    for name, spec in specs.items():
        if spec.prior is None or spec.fixed:
            continue
        x = system.param(name)
        res.append(spec.prior.residuals(x))
        total = total + spec.prior.nllh(x).to(total.device)
    return res, total


def assemble(system: System, series: Sequence[Series],
             outputs: Callable[[int], dict[str, Tensor]],
             condition: Callable[[int], AbstractContextManager[None]], check: bool
             ) -> tuple[Tensor, Tensor, int]:
    """The full residual vector (data, ln-sigma, priors: see the module docstring), the
    exact objective and the number of data residuals. ``outputs(e)`` gives experiment
    ``e``'s predicted outputs ``{name: (n_t, *shape)}`` (asked once per experiment), and
    ``condition(e)`` is the context in which its parameters take its condition's values."""
    cache: dict[int, dict[str, Tensor]] = {}
    rs: list[Tensor] = []
    qs: list[Tensor] = []
    nll: list[Tensor] = []
    for s in series:
        with condition(s.exp):
            if s.exp not in cache:
                cache[s.exp] = outputs(s.exp)
            pred = select(s, cache[s.exp][s.var], 1)
            r, q, terms = series_residuals(system, s, pred, check)
        rs.append(r)
        nll.append(terms.sum())
        if q is not None:
            qs.append(q)
    pres, pnll = prior_terms(system)
    vec = torch.cat(rs + qs + pres)
    total = torch.stack(nll).sum() + pnll.to(vec.device) if nll else pnll
    return vec, total, sum(int(r.numel()) for r in rs)


def _coef_text(c: Tensor | str) -> str:
    if isinstance(c, str):
        return f"{c} (estimated)"
    return f"{float(c.reshape(-1)[0]):g}" if c.numel() == 1 or bool((c == c.reshape(-1)[0]).all()) \
        else "per point"


def describe_objective(system: System, series: Sequence[Series], value: float,
                       sigma_estimated: bool) -> dict[str, Any]:
    """What a fit minimised, for its report and files: ``kind`` ("negative log-posterior",
    "negative log-likelihood" or "weighted least squares"), ``value`` (the exact objective,
    constants included; NaN for weighted least squares with an estimated noise level),
    ``priors`` ``{parameter: prior}`` and ``noise`` ``{"experiment/output": model}``."""
    noise: dict[str, str] = {}
    models = False
    for s in series:
        key = s.label.replace("experiment ", "").replace(", output ", "/").replace("'", "")
        if isinstance(s.a, str) or isinstance(s.b, str) or s.noise.name != "normal" or \
                not bool((torch.as_tensor(s.b) == 0).all()):
            models = True
        b = "" if not isinstance(s.b, str) and bool((s.b == 0).all()) else \
            f" + b|y|, b = {_coef_text(s.b)}"
        noise[key] = f"{s.noise.name}, sigma = a{b}, a = {_coef_text(s.a)}"
    priors = {name: repr(spec.prior) for name, spec in system.parameter_specs().items()
              if spec.prior is not None and not spec.fixed}
    if priors:
        kind = "negative log-posterior"
    elif models or not sigma_estimated:
        kind = "negative log-likelihood"
    else:
        kind = "weighted least squares"
    return {"kind": kind, "value": value if kind != "weighted least squares" else math.nan,
            "priors": priors, "noise": noise if models else {}}


__all__ = ["Series", "assemble", "describe_objective", "make_series",
           "prior_terms", "select", "series_residuals", "series_sigma"]
