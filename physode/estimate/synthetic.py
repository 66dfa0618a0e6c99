"""Synthetic data of experiments as scientists run them: observables, noise models, conditions,
dosing, inputs and pre-equilibration.

:func:`simulate_experiments` takes experiment *designs* (an
:class:`~physode.data.observations.Experiment` with its times and protocol; its ``values``
may be empty), predicts the observed outputs through the same road a fit takes
(:class:`~physode.estimate.problem.FitProblem`: the same conditions, events, inputs and
steady states), and draws measurements from each output's noise model
(:class:`~physode.data.experiment_parts.NoiseSpec`): on the model's scale ``T`` (lin, ln,
log10), ``T(m) = T(y) + sigma e`` with ``e`` standard normal or standard Laplace
(``sigma`` the Laplace scale ``b``), ``sigma = a + b |y|``, coefficients given by name read
from the system's parameters. This is how ``examples/pk_dosing.py`` makes its data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from physode.data.experiment_parts import NoiseSpec
from physode.data.observations import Experiment, Observations
from physode.data.schema import system_label
from physode.errors import InvalidArgument
from physode.estimate.problem import FitProblem, experiment_initial_states
from physode.estimate.settings import SolverSettings
from physode.model.system import System


def _coef(system: System, c: float | str) -> float:
    if isinstance(c, str):
        return float(system.param(c).detach().reshape(-1)[0])
    return float(c)


def _draw(spec: NoiseSpec | None, y: np.ndarray, system: System, sigma: np.ndarray | None,
          rng: np.random.Generator, where: str) -> np.ndarray:
    if spec is None:
        if sigma is None:
            return y.copy()
        return y + np.broadcast_to(sigma, y.shape) * rng.standard_normal(y.shape)
    s = _coef(system, spec.a) + _coef(system, spec.b) * np.abs(y)
    if np.any(s <= 0) or not np.all(np.isfinite(s)):
        raise InvalidArgument(f"{where}: the noise model gives sigma <= 0 or non-finite")
    e = rng.standard_normal(y.shape) if spec.distribution == "normal" else rng.laplace(
        size=y.shape)
    if spec.scale == "lin":
        return y + s * e
    if np.any(y <= 0):
        raise InvalidArgument(f"{where}: the {spec.scale} noise model needs positive "
                              "predictions")
    if spec.scale == "log":
        return np.exp(np.log(y) + s * e)
    return np.asarray(10.0 ** (np.log10(y) + s * e))


def simulate_experiments(system: System, experiments: Sequence[Experiment],
                         observe: Sequence[str] | Mapping[str, Sequence[str]],
                         seed: int = 0, *, rtol: float = 1e-10, atol: float = 1e-12,
                         method: str = "dopri5", metadata: Mapping[str, Any] | None = None,
                         ) -> Observations:
    """Simulate ``experiments`` (designs: times and protocol) of ``system`` and draw noisy
    measurements of the outputs ``observe`` (state variables or observables; one list for
    all, or ``{experiment name: list}``) from each output's noise model.

    Returns :class:`~physode.data.observations.Observations` whose experiments are the
    designs with their ``values`` filled in, recording the true parameter values and
    each experiment's initial state.
    """
    designs = list(experiments)
    if not designs:
        raise InvalidArgument("simulate_experiments needs at least one experiment")
    filled = []
    for exp in designs:
        names = list(observe[exp.name] if isinstance(observe, Mapping) else observe)
        values = {}
        for name in names:
            var = system.output_var(name)
            if var is None:
                raise InvalidArgument(f"experiment {exp.name!r}: observe names {name!r}, "
                                      f"which is neither a state variable nor an observable "
                                      f"of {type(system).__name__}")
            values[name] = np.ones((exp.t.size, *var.shape))
        filled.append(replace(exp, values=values, mask={}, index={}))
    obs = Observations(system=system_label(system), experiments=filled,
                       parameters={k: v.detach().cpu().numpy() for k, v in
                                   system.params.items()})
    obs.validate(system)
    problem = FitProblem(system, obs, SolverSettings(method=method, rtol=rtol, atol=atol),
                         learnable=False)
    with torch.no_grad():
        clean = problem.predict_outputs()
        y0 = experiment_initial_states(system, obs).cpu().numpy()
    rng = np.random.default_rng(seed)
    out = []
    for e, exp in enumerate(filled):
        values = {}
        for name in exp.values:
            where = f"experiment {exp.name!r}, output {name!r}"
            values[name] = _draw(exp.noise.get(name), clean[e][name], system,
                                 exp.sigma.get(name), rng, where)
        init = system.layout.unpack(torch.as_tensor(y0[e]))
        out.append(replace(exp, values=values,
                           y0={k: v.numpy().copy() for k, v in init.items()}))
    info = {"generator": "physode.simulate_experiments", "method": method, "rtol": rtol,
            "atol": atol, "seed": int(seed), **dict(metadata or {})}
    units = {}
    for name in obs.variables:
        var = system.output_var(name)
        if var is not None and var.units:
            units[name] = var.units
    return Observations(system=obs.system, experiments=out, units=units,
                        time_units=system.time_units, parameters=obs.parameters,
                        parameter_units={k: s.units for k, s in system.parameter_specs().items()
                                         if s.units}, metadata=info)


__all__ = ["simulate_experiments"]
