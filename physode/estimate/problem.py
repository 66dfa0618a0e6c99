"""The estimation problem behind :func:`physode.fit`: the objective of a system against data.

The objective is the negative log-likelihood of the data under each output's noise model,
plus the priors (:mod:`physode.estimate.likelihood`). For schema-1 data (no noise model)
it is weighted least squares, the Gaussian negative log-likelihood up to constants
(Bates & Watts, *Nonlinear Regression Analysis and Its Applications*, 1988, ch. 2):

    r_i = (model_i(theta) - observed_i) / sigma_i,   chi2 = sum_i r_i^2

over every observed, unmasked point of every experiment. sigma comes from the
observations; a variable without one gets sigma = 1 and a single shared noise level is
estimated from the residuals afterwards (``sigma_estimated``). An output is a state
variable or an observable the system declares (``system.observables``). Experiments share
the system's parameters except those their condition sets
(:mod:`physode.estimate.conditions`). Unknown initial states
(``system.set_initial_state(unknown=...)``) are fitted per experiment:
:func:`prepare_initial_states` gives the system one guess per experiment, explicitly
(``fit`` calls it; :class:`FitProblem` itself never changes the system except through
:meth:`FitProblem.set_vector`). Experiments with the same start time, observation times
and setup (condition, inputs, dosing) are solved together in the batch dimension, and
with an adaptive explicit method experiments that differ only in their times share one
per-sample solve (:mod:`physode.estimate.groups`); an experiment observed only at its
start time needs no solve. :class:`FitProblem` is the
only road from the estimator to the solver. It trusts its observations to be valid for the
system (loading validates them; ``fit`` validates an
:class:`~physode.data.observations.Observations` it is handed).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from physode.data.observations import Observations
from physode.errors import InvalidArgument, SolverError
from physode.estimate.conditions import ConditionedField
from physode.estimate.fine import fine_trajectories
from physode.estimate.groups import Group, build_groups, start_time
from physode.estimate.jacobian import initial_tangents, residual_jacobian, rows_jacobian
from physode.estimate.likelihood import Series, assemble, make_series, prior_terms
from physode.estimate.protocol import ExperimentSetup, PreequilibrationSetup, steady_initial_state
from physode.estimate.sensitivity import SensitivityField
from physode.estimate.settings import SolverSettings
from physode.estimate.staggered import applies, parameter_jacobian, solve_group, staggered_model
from physode.model.system import System
from physode.ode.sensitivity_batch import SensitivityModel
from physode.ode.solve import solve


@dataclass
class Evaluation:
    """Residuals (and their Jacobian w.r.t. the fitted vector, when asked)."""

    r: np.ndarray
    J: np.ndarray | None = None
    nfe: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def experiment_initial_states(system: System, observations: Observations) -> Tensor:
    """``(n_experiments, state_size)`` float64: each experiment's initial state, from its
    ``y0`` where the observations give one (for an unknown variable: the starting guess
    of its fit), else from the system's reference ``y0`` (one row per experiment, or one
    shared row). Pure."""
    layout = system.layout
    exps = observations.experiments
    ref = system.y0
    ref_t = next(iter(system.parameters()), None)
    device = ref_t.device if ref_t is not None else torch.device("cpu")
    rows = []
    for e, exp in enumerate(exps):
        values: dict[str, Tensor] = {}
        if ref is not None:
            r = ref.detach().to(torch.float64)
            base = r[e] if r.dim() == 2 and r.shape[0] == len(exps) else r.reshape(-1)
            if base.numel() != layout.size:
                raise InvalidArgument(f"system y0 of shape {tuple(ref.shape)} does not "
                                      f"match {len(exps)} experiment(s)")
            values = layout.unpack(base.clone())
        for name, v in (exp.y0 or {}).items():
            values[name] = torch.as_tensor(v, dtype=torch.float64)
        missing = [n for n in layout.names if n not in values]
        if missing:
            raise InvalidArgument(
                f"experiment {exp.name!r}: no initial value for {missing} (neither in the "
                "observations' y0 nor in the system's y0); set system.y0 and declare it "
                "unknown to fit it")
        rows.append(layout.pack({k: values[k].to(device) for k in layout.names}))
    return torch.stack(rows)


def prepare_initial_states(system: System, observations: Observations) -> None:
    """Give ``system`` one initial state per experiment (its reference ``y0`` becomes
    :func:`experiment_initial_states`), keeping the same variables unknown, so that each
    experiment's unknown initial state is fitted separately. Changes ``system``; does
    nothing when no initial state is unknown. :func:`physode.fit` calls it."""
    unknown = system.unknown_initial_state
    if not unknown:
        return
    y0 = experiment_initial_states(system, observations)
    system.set_initial_state(y0 if len(y0) > 1 else y0[0], unknown=unknown)


class FitProblem:
    """The objective of ``system`` against ``observations`` as a function of the fitted
    vector, as one residual vector (see :mod:`physode.estimate.likelihood`).

    The fitted vector is ``system.free_vector()`` (unconstrained free parameters, then
    unknown initial states) followed, when ``learnable`` is True, by the flattened
    weights of the learnable parts (``system.learnable_parameters()``). ``n_data`` counts
    the data points; ``n_residuals`` the residual vector (data, ln-sigma terms, priors).
    """

    def __init__(self, system: System, observations: Observations,
                 solver: SolverSettings | None = None, *, learnable: bool = True) -> None:
        if not isinstance(system, System):
            raise InvalidArgument(f"fit needs a physode.System, got {type(system).__name__}")
        if not isinstance(observations, Observations):
            raise InvalidArgument("fit needs physode.Observations (see "
                                  f"physode.load_observations), got {type(observations).__name__}")
        self.system = system
        self.obs = observations
        self.solver = solver or SolverSettings()
        self.compile = False
        ref = next(iter(system.parameters()), None)
        self.device = ref.device if ref is not None else torch.device("cpu")
        self.dtype = torch.float64
        self._y0_const = experiment_initial_states(system, observations)
        self._y0_free = system.initial_state_parameters()
        self.y0_fitted = bool(self._y0_free)
        self._check_initial_state_parameters()
        self.setups = [ExperimentSetup(system, exp, self.device)
                       for exp in observations.experiments]
        self._preeq = {e: (s.preeq if s.preeq else None) for e, s in enumerate(self.setups)
                       if s.preeq is not None}
        self._preeq_fields = {e: self.system if c is None else ConditionedField(
            self.system, PreequilibrationSetup(c)) for e, c in self._preeq.items()}
        self._setup_series()
        self._setup_groups()
        self.staggered = staggered_model(system, self.solver, self.dtype, self.device)
        self._staggered_compiled = False
        self.physical = list(system.free_parameters())
        self.learnable = list(system.learnable_parameters()) if learnable else []
        self.params = self.physical + self.learnable
        self.n_physical = sum(p.numel() for p in self.physical)
        self.n_params = sum(p.numel() for p in self.params)
        self._nfe = 0
        self._sens: dict[bool, tuple[list[SensitivityField], Tensor, int,
                                     dict[str, Tensor]]] = {}
        with torch.no_grad():
            n_prior = sum(int(r.numel()) for r in prior_terms(system)[0])
        self.n_residuals = self.n_data + sum(s.count for s in self.series if s.varying) + n_prior
        self.objective_value = math.nan

    # ------------------------------------------------------------------ setup
    def _check_initial_state_parameters(self) -> None:
        n_exp = len(self.obs.experiments)
        for name, p in self._y0_free.items():
            size = self.system.layout.by_name[name].size
            per_exp = p.numel() == n_exp * size and (n_exp == 1 or (
                p.dim() == 2 and p.shape[0] == n_exp))
            if not per_exp:
                raise InvalidArgument(
                    f"the unknown initial state {name!r} has shape {tuple(p.shape)}, not one "
                    f"value per experiment ({n_exp} x {size}); call "
                    "physode.estimate.problem.prepare_initial_states(system, observations) "
                    "first (physode.fit does)")

    def initial_states(self) -> Tensor:
        """``(n_experiments, state_size)``; differentiable when initial states are fitted
        or pre-equilibrated (the steady state of the pre-condition, IFT gradients)."""
        y0 = self._given_initial_states()
        if not self._preeq:
            return y0
        rows = list(y0.unbind(0))
        for e, func in self._preeq_fields.items():
            exp = self.obs.experiments[e]
            rows[e] = steady_initial_state(func, rows[e], start_time(exp),
                                           f"experiment {exp.name!r}")
        return torch.stack(rows)

    def _given_initial_states(self) -> Tensor:
        if not self.y0_fitted:
            return self._y0_const
        n_exp = len(self.obs.experiments)
        layout = self.system.layout
        parts = []
        for var in layout.variables:
            p = self._y0_free.get(var.name)
            if p is None:
                parts.append(self._y0_const[:, layout.slices[var.name]])
            else:
                parts.append(p.reshape(n_exp, var.size).to(self.dtype))
        return torch.cat(parts, dim=-1)

    def _setup_series(self) -> None:
        self.series: list[Series] = []
        any_missing_sigma = False
        self._observables: list[list[str]] = []
        self._times: list[Tensor] = []
        states = set(self.system.layout.names)
        for e, exp in enumerate(self.obs.experiments):
            self._observables.append([n for n in exp.values if n not in states])
            self._times.append(torch.as_tensor(exp.t, dtype=self.dtype, device=self.device))
            for name, values in exp.values.items():
                series, missing = make_series(self.system, e, exp, name, values, self.device)
                any_missing_sigma |= missing
                self.series.append(series)
        self.sigma_estimated = any_missing_sigma
        self.n_data = sum(s.count for s in self.series)
        if self.n_data == 0:
            raise InvalidArgument("the observations have no unmasked value to fit")

    def _setup_groups(self) -> None:
        s = self.solver
        per_sample = (not self._preeq and s.gradient in ("aca", "direct")
                      and not (s.options or {}).get("tstops"))
        y0 = experiment_initial_states(self.system, self.obs) if per_sample else None
        self.groups, self.fields = build_groups(self.system, self.obs, self.setups,
                                                self.solver.method, self.dtype, self.device,
                                                y0)

    # ------------------------------------------------------------------ vector
    def get_vector(self) -> np.ndarray:
        """The fitted vector (unconstrained), as float64 numpy."""
        return torch.cat([p.detach().reshape(-1) for p in self.params]).cpu().numpy().astype(
            np.float64) if self.params else np.zeros(0)

    def set_vector(self, x: np.ndarray | Tensor) -> None:
        v = torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape(-1)
        offset = 0
        with torch.no_grad():
            for p in self.params:
                n = p.numel()
                p.copy_(v[offset:offset + n].reshape(p.shape).to(p))
                offset += n

    # ------------------------------------------------------------------ model
    def solve_states(self, func: nn.Module, y0: Tensor, group: Group,
                      gradient: str | None,
                      sens: tuple[dict[str, Tensor], int] | None = None) -> Tensor:
        """``(n_t, B, size)``: the states of ``group`` at its observation times (``sens``:
        the tangents when ``func`` is the sensitivity field, for the dosing jumps)."""
        if group.grid.numel() == 1:  # observed only at the start: the initial state
            return y0.unsqueeze(0)
        s = self.solver
        options, events = s.options, None
        if group.setup is not None:
            span = (float(group.grid[0]), float(group.grid[-1]))
            options, events = group.setup.solve_options(s.options, span, sens)
        try:
            sol = solve(func, y0, group.grid, method=s.method, rtol=s.rtol, atol=s.atol,
                        gradient=s.gradient if gradient is None else gradient,
                        options=options, compile=self.compile and events is None
                        and (group.setup is None or group.setup.trivial),
                        events=events, per_sample=group.per_sample)
        except SolverError as exc:
            names = ", ".join(repr(self.obs.experiments[e].name) for e in group.exps)
            raise SolverError(f"experiment {names}: {exc}", exc.t) from exc
        self._nfe += sol.stats.nfe
        return sol.ys[1:] if group.drop_first else sol.ys

    def trajectories(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Fitted states on ``n`` evenly spaced times from each experiment's t0 to its last
        observation (:func:`physode.estimate.fine.fine_trajectories`)."""
        return fine_trajectories(self, n)

    def predict(self, grad: bool = False) -> list[Tensor]:
        """Full states at the observation times, one ``(n_t, state_size)`` per experiment."""
        y0 = self.initial_states()
        out: list[Tensor | None] = [None] * len(self.obs.experiments)
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            for g in self.groups:
                ys = self.plain_states(g, y0[g.exps])
                for b, e in enumerate(g.exps):
                    out[e] = ys[:, b]
        return out  # type: ignore[return-value]

    def outputs(self, e: int, states: Tensor) -> dict[str, Tensor]:
        """Experiment ``e``'s state variables ``(n_t, *shape)`` and the observables it
        observes, from its states ``(n_t, state_size)`` (call under its setup)."""
        named = self.system.layout.unpack(states)
        names = self._observables[e]
        if names:
            named.update(self.system.evaluate_observables(self._times[e], dict(named), names))
        return named

    def predict_outputs(self) -> list[dict[str, np.ndarray]]:
        """Every observed output of every experiment at its observation times."""
        states = self.predict()
        out = []
        with torch.no_grad():
            for e, exp in enumerate(self.obs.experiments):
                with self.setups[e].applied(self.system):
                    named = self.outputs(e, states[e])
                out.append({k: named[k].cpu().numpy() for k in exp.values})
        return out

    def _assemble(self, states: list[Tensor], check: bool) -> tuple[Tensor, Tensor, int]:
        return assemble(self.system, self.series, lambda e: self.outputs(e, states[e]),
                        self._applied, check)

    def _applied(self, e: int) -> AbstractContextManager[None]:
        return self.setups[e].applied(self.system)

    def residual_tensor(self, states: list[Tensor]) -> Tensor:
        """The residual vector at ``states`` (differentiable); checks sigma > 0 and keeps
        the exact objective in ``objective_value``."""
        vec, total, _ = self._assemble(states, True)
        self.objective_value = float(total.detach())
        return vec

    def residuals(self) -> Evaluation:
        """The residual vector at the current parameters (no gradient)."""
        self._nfe = 0
        r = self.residual_tensor(self.predict())
        return Evaluation(r.detach().cpu().numpy(), nfe=self._nfe)

    def objective(self) -> float:
        """The exact objective now: -log likelihood (constants included) - log prior."""
        self.residuals()
        return self.objective_value

    def loss_and_grad(self) -> tuple[float, Tensor, np.ndarray]:
        """``0.5 Σ r² / n_data`` and its gradient w.r.t. the fitted vector (ACA by default)."""
        self._nfe = 0
        for p in self.params:
            p.grad = None
        r = self.residual_tensor(self.predict(grad=True))
        loss = 0.5 * r.square().sum() / self.n_data
        # the loss may not depend on anything fitted (data only at a known initial state)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True) \
            if self.params and loss.requires_grad else (None,) * len(self.params)
        g = torch.cat([(torch.zeros_like(p) if gi is None else gi).reshape(-1)
                       for p, gi in zip(self.params, grads)]) if self.params else torch.zeros(0)
        return float(loss.detach()), g.detach(), r.detach().cpu().numpy()

    # ------------------------------------------------------------------ Jacobian
    def _sensitivity_setup(self, physical_only: bool
                           ) -> tuple[list[SensitivityField], Tensor, int, dict[str, Tensor]]:
        params = self.physical if physical_only else self.params
        P, tangents, s0 = initial_tangents(self.system, params, self._y0_free,
                                           len(self.obs.experiments), self.dtype, self.device)
        fields = []
        for g in self.groups:
            prefix = "" if g.field is self.system else "system."
            fields.append(SensitivityField(g.field or self.system,
                                           {prefix + k: v for k, v in tangents.items()}, P))
        return fields, s0, P, tangents

    def residuals_and_jacobian(self, physical_only: bool = False,
                               information: bool = False) -> Evaluation:
        """The residual vector and its exact Jacobian w.r.t. the fitted vector (or only its
        physical part): states by forward sensitivities (:mod:`physode.estimate.sensitivity`),
        then the residuals' own dependence by forward-mode differentiation.

        ``information=True`` (for the covariance): the rows of the ``ln sigma`` terms are
        multiplied by their residual ``q``, giving ``d ln sigma``; then ``J^T J`` is the
        expected Fisher information of normal noise with a fitted sigma,
        ``Σ (dμ)²/σ² + 2 (dσ)²/σ²`` (Seber & Wild, *Nonlinear Regression*, 1989, sec. 2.8),
        where plain Gauss-Newton on the residuals counts the sigma part once."""
        key = bool(physical_only)
        if key not in self._sens:
            self._sens[key] = self._sensitivity_setup(key)
        fields, s0, P, tangents = self._sens[key]
        self._nfe = 0
        params = self.physical if physical_only else self.params
        if self._preeq:  # d(steady state)/d(fitted vector), by the IFT, one row per state
            with torch.enable_grad():
                y0g = self.initial_states()
            s0 = s0.clone()
            for e in self._preeq:
                s0[e] = self._rows_jacobian(y0g[e], params, P)
            y0 = y0g.detach()
        else:
            y0 = self.initial_states().detach()
        n = y0.shape[-1]
        states: list[Tensor] = [y0[:0]] * len(self.obs.experiments)
        sens: list[Tensor] = [y0[:0]] * len(self.obs.experiments)
        model = self.staggered
        staggered = [model is not None and applies(g, self.system) for g in self.groups]
        pdp = parameter_jacobian(model, params, P) if model is not None and any(
            staggered) else None
        with torch.no_grad():
            for g, field_, stag in zip(self.groups, fields, staggered):
                if stag and model is not None and pdp is not None:
                    xs, ss = self._staggered_solve(model, g, y0[g.exps], s0[g.exps], *pdp)
                    for b, e in enumerate(g.exps):
                        states[e], sens[e] = xs[:, b], ss[:, b]
                    continue
                z0 = torch.cat([y0[g.exps], s0[g.exps].reshape(len(g.exps), P * n)], -1)
                zs = self.solve_states(field_, z0, g, None, (tangents, P))
                for b, e in enumerate(g.exps):
                    states[e] = zs[:, b, :n]
                    sens[e] = zs[:, b, n:].reshape(-1, P, n)
            r = self.residual_tensor(states)
        J = self._jacobian(states, sens, params, P)
        if information:
            n_q = sum(s.count for s in self.series if s.varying)
            rows = slice(self.n_data, self.n_data + n_q)
            J[rows] = J[rows] * r[rows].unsqueeze(-1)
        return Evaluation(r.cpu().numpy(), J.cpu().numpy(), nfe=self._nfe)

    def _staggered_solve(self, model: SensitivityModel, g: Group, y0: Tensor, s0: Tensor,
                         p: Tensor, dp: Tensor) -> tuple[Tensor, Tensor]:
        """States and sensitivities of group ``g`` by :mod:`physode.estimate.staggered`,
        its compiled loop once the fit compiled it (it then costs nothing to build)."""
        names = ", ".join(repr(self.obs.experiments[e].name) for e in g.exps)
        compiled = self.compile or self._staggered_compiled
        xs, ss, nfe = solve_group(model, g, y0, s0, p, dp, self.solver, compiled, names)
        self._staggered_compiled = compiled
        self._nfe += nfe
        return xs, ss

    def plain_states(self, g: Group, y0: Tensor) -> Tensor:
        """The states of group ``g`` without derivatives: by the compiled staggered loop
        once the fit has built it and where it applies (the sensitivities zero, in the
        shape of the fit's, so the same graph serves), else the plain solve (eager, a
        third of the staggered solve's cost)."""
        model = self.staggered
        compiled = self.compile or self._staggered_compiled
        if (model is None or not compiled or not applies(g, self.system)
                or torch.is_grad_enabled()):
            assert g.field is not None
            return self.solve_states(g.field, y0, g, None)
        P = self._sens[False][2] if False in self._sens else self.n_params
        p = model.parameters().detach().reshape(-1)
        B, n = y0.shape
        return self._staggered_solve(model, g, y0, y0.new_zeros(B, P, n),
                                     p, p.new_zeros(p.numel(), P))[0]

    def _rows_jacobian(self, y: Tensor, params: list[nn.Parameter], P: int) -> Tensor:
        """``(P, n)``: d y / d(fitted vector) (:func:`rows_jacobian`)."""
        return rows_jacobian(y, params, P)

    def _jacobian(self, states: list[Tensor], sens: list[Tensor], params: list[nn.Parameter],
                  P: int) -> Tensor:
        """d(residual vector)/d(fitted vector) (:func:`residual_jacobian`)."""
        return residual_jacobian(self.system, lambda xs: self._assemble(xs, False)[0], states,
                                 sens, params, P, self.n_residuals)

    # ------------------------------------------------------------------ extras
    def physical_derivatives(self) -> np.ndarray:
        """d(physical value)/d(unconstrained value) for each physical free element."""
        out = []
        specs = self.system.parameter_specs()
        for name, p in zip(self.system.free_names(), self.physical):
            if name.startswith("y0."):
                out.append(torch.ones(p.numel(), dtype=self.dtype))
                continue
            u = p.detach().clone().requires_grad_(True)
            x = specs[name].to_physical(u)
            (d,) = torch.autograd.grad(x.sum(), u)
            out.append(d.reshape(-1).cpu().to(self.dtype))
        return torch.cat(out).numpy() if out else np.zeros(0)

    def physical_values(self) -> np.ndarray:
        """The physical value of each fitted physical scalar, in ``free_labels()`` order."""
        out = []
        for name, p in zip(self.system.free_names(), self.physical):
            value = p if name.startswith("y0.") else self.system.param(name)
            out.append(value.detach().reshape(-1))
        return torch.cat(out).cpu().numpy().astype(np.float64) if out else np.zeros(0)

    def describe_point(self, limit: int = 6) -> str:
        """``"length=1.2, damping=0.1"``: the current physical values, for messages."""
        labels = self.system.free_labels()
        values = self.physical_values()
        text = ", ".join(f"{k}={v:.6g}" for k, v in list(zip(labels, values))[:limit])
        return text + (f", ... ({len(labels)} values)" if len(labels) > limit else "")

    def chi2(self, r: np.ndarray) -> float:
        """``Σ r²`` of a residual vector (inf when any is not finite): the optimisers'
        objective, ``2 (objective + constant)``."""
        return float(np.dot(r, r)) if np.all(np.isfinite(r)) else math.inf

    def data_chi2(self, r: np.ndarray) -> float:
        """The chi-square: ``Σ r²`` over the data residuals (the first ``n_data``)."""
        return self.chi2(np.asarray(r)[:self.n_data])


__all__ = ["Evaluation", "FitProblem", "Group", "Series"]
