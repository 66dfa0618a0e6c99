"""The estimation problem behind :func:`physode.fit`: residuals of a system against data.

Weighted least squares, i.e. the Gaussian negative log-likelihood up to constants
(Bates & Watts, *Nonlinear Regression Analysis and Its Applications*, 1988, ch. 2):

    r_i = (model_i(theta) - observed_i) / sigma_i,   chi2 = sum_i r_i^2

over every observed, unmasked point of every experiment. sigma comes from the
observations; a variable without one gets sigma = 1 and a single shared noise level is
estimated from the residuals afterwards (``sigma_estimated``). All experiments share the
system's parameters. Unknown initial states (``system.set_initial_state(unknown=...)``)
are fitted per experiment: :func:`prepare_initial_states` gives the system one guess per
experiment, explicitly (``fit`` calls it; :class:`FitProblem` itself never changes the
system except through :meth:`FitProblem.set_vector`). Experiments with the same start time
and observation times are solved together in the batch dimension; an experiment observed
only at its start time needs no solve. :class:`FitProblem` is the only road from the
estimator to the solver. It trusts its observations to be valid for the system (loading
validates them; ``fit`` validates an :class:`~physode.data.observations.Observations` it is
handed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from physode.data.observations import Experiment, Observations
from physode.errors import InvalidArgument, SolverError
from physode.estimate.sensitivity import SensitivityField
from physode.estimate.settings import SolverSettings
from physode.model.system import System
from physode.ode.solve import solve


@dataclass
class Series:
    """One observed variable of one experiment, prepared for residuals."""

    exp: int
    var: str
    state: slice
    shape: tuple[int, ...]
    index: list[tuple[int, Tensor]]
    obs: Tensor
    inv_sigma: Tensor
    valid: Tensor
    count: int


@dataclass
class Group:
    """Experiments solved together: same start time and observation times."""

    exps: list[int]
    grid: Tensor
    drop_first: bool


@dataclass
class Evaluation:
    """Weighted residuals (and their Jacobian w.r.t. the fitted vector, when asked)."""

    r: np.ndarray
    J: np.ndarray | None = None
    nfe: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def start_time(exp: Experiment) -> float:
    """The experiment's t0 (its first time when not given)."""
    return float(exp.t[0]) if exp.t0 is None else float(exp.t0)


def experiment_initial_states(system: System, observations: Observations) -> Tensor:
    """``(n_experiments, state_size)`` float64: each experiment's initial state, from its
    ``y0`` where the observations give one (and the variable is not unknown), else from
    the system's reference ``y0`` (one row per experiment, or one shared row). Pure."""
    layout = system.layout
    exps = observations.experiments
    ref = system.y0
    unknown = set(system.unknown_initial_state)
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
            if name not in unknown:
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
    """Residuals of ``system`` against ``observations`` as functions of the fitted vector.

    The fitted vector is ``system.free_vector()`` (unconstrained free parameters, then
    unknown initial states) followed, when ``learnable`` is True, by the flattened
    weights of the learnable parts (``system.learnable_parameters()``).
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
        self._setup_series()
        self._setup_groups()
        self.physical = list(system.free_parameters())
        self.learnable = list(system.learnable_parameters()) if learnable else []
        self.params = self.physical + self.learnable
        self.n_physical = sum(p.numel() for p in self.physical)
        self.n_params = sum(p.numel() for p in self.params)
        self._nfe = 0
        self._sens: tuple[bool, SensitivityField, Tensor] | None = None

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
        """``(n_experiments, state_size)``; differentiable when initial states are fitted."""
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
        layout = self.system.layout
        self.series: list[Series] = []
        any_missing_sigma = False
        for e, exp in enumerate(self.obs.experiments):
            for name, values in exp.values.items():
                var = layout.by_name[name]
                index = [(var.dims.index(d), torch.as_tensor(p, dtype=torch.long,
                                                             device=self.device))
                         for d, p in exp.index.get(name, {}).items()]
                obs = torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device)
                valid = torch.isfinite(obs)
                if name in exp.mask:
                    valid &= ~torch.as_tensor(exp.mask[name], device=self.device)
                sigma = exp.sigma.get(name)
                if sigma is None:
                    any_missing_sigma = True
                    inv = torch.ones_like(obs)
                else:
                    inv = 1.0 / torch.as_tensor(np.broadcast_to(sigma, values.shape).copy(),
                                                dtype=self.dtype, device=self.device)
                obs = torch.where(valid, obs, torch.zeros_like(obs))
                self.series.append(Series(e, name, layout.slices[name], var.shape, index,
                                          obs, inv, valid, int(valid.sum())))
        self.sigma_estimated = any_missing_sigma
        self.n_data = sum(s.count for s in self.series)
        if self.n_data == 0:
            raise InvalidArgument("the observations have no unmasked value to fit")

    def _setup_groups(self) -> None:
        groups: dict[tuple[float, tuple[float, ...]], list[int]] = {}
        for e, exp in enumerate(self.obs.experiments):
            groups.setdefault((start_time(exp), tuple(exp.t.tolist())), []).append(e)
        self.groups = []
        for (t0, times), exps in groups.items():
            grid = list(times)
            drop = t0 < grid[0]
            if drop:
                grid = [t0, *grid]
            self.groups.append(Group(exps, torch.tensor(grid, dtype=self.dtype,
                                                        device=self.device), drop))

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
    def _solve_states(self, func: nn.Module, y0: Tensor, group: Group,
                      gradient: str | None) -> Tensor:
        """``(n_t, B, size)``: the states of ``group`` at its observation times."""
        if group.grid.numel() == 1:  # observed only at the start: the initial state
            return y0.unsqueeze(0)
        s = self.solver
        try:
            sol = solve(func, y0, group.grid, method=s.method, rtol=s.rtol, atol=s.atol,
                        gradient=s.gradient if gradient is None else gradient,
                        options=s.options, compile=self.compile)
        except SolverError as exc:
            names = ", ".join(repr(self.obs.experiments[e].name) for e in group.exps)
            raise SolverError(f"experiment {names}: {exc}", exc.t) from exc
        self._nfe += sol.stats.nfe
        return sol.ys[1:] if group.drop_first else sol.ys

    def trajectories(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Fitted states on ``n`` evenly spaced times from each experiment's t0 to its last
        observation: ``(times, states)``, one ``(n,)`` and ``(n, state_size)`` each."""
        y0 = self.initial_states().detach()
        ts, states = [], []
        with torch.no_grad():
            for e, exp in enumerate(self.obs.experiments):
                t0, t_end = start_time(exp), float(exp.t[-1])
                t = np.linspace(t0, t_end, max(int(n), 2)) if t_end != t0 else np.array([t0])
                grid = Group([e], torch.as_tensor(t, dtype=self.dtype, device=self.device),
                             False)
                ys = self._solve_states(self.system, y0[e:e + 1], grid, None)
                ts.append(t)
                states.append(ys[:, 0].cpu().numpy())
        return ts, states

    def predict(self, grad: bool = False) -> list[Tensor]:
        """Full states at the observation times, one ``(n_t, state_size)`` per experiment."""
        y0 = self.initial_states()
        out: list[Tensor | None] = [None] * len(self.obs.experiments)
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            for g in self.groups:
                ys = self._solve_states(self.system, y0[g.exps], g, None)
                for b, e in enumerate(g.exps):
                    out[e] = ys[:, b]
        return out  # type: ignore[return-value]

    def _select(self, s: Series, x: Tensor, lead: int) -> Tensor:
        """Observed components of a state variable: ``x`` is ``(*lead dims, var size)``."""
        x = x.reshape(*x.shape[:-1], *s.shape) if s.shape else x.squeeze(-1)
        for axis, pos in s.index:
            x = x.index_select(lead + axis, pos)
        return x

    def residual_tensor(self, states: list[Tensor]) -> Tensor:
        parts = []
        for s in self.series:
            pred = self._select(s, states[s.exp][:, s.state], 1)
            parts.append(((pred - s.obs) * s.inv_sigma)[s.valid])
        return torch.cat(parts)

    def residuals(self) -> Evaluation:
        """Weighted residuals at the current parameters (no gradient)."""
        self._nfe = 0
        r = self.residual_tensor(self.predict())
        return Evaluation(r.detach().cpu().numpy(), nfe=self._nfe)

    def loss_and_grad(self) -> tuple[float, Tensor, np.ndarray]:
        """``0.5 chi2 / n_data`` and its gradient w.r.t. the fitted vector (ACA by default)."""
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
    def _sensitivity_setup(self, physical_only: bool) -> tuple[SensitivityField, Tensor]:
        params = self.physical if physical_only else self.params
        names = {id(p): n for n, p in self.system.named_parameters()}
        y0_names = {id(p): n for n, p in self._y0_free.items()}
        P = sum(p.numel() for p in params)
        n = self.system.state_size
        n_exp = len(self.obs.experiments)
        tangents: dict[str, Tensor] = {}
        s0 = torch.zeros(n_exp, P, n, dtype=self.dtype, device=self.device)
        k = 0
        for p in params:
            m = p.numel()
            if id(p) in y0_names:
                sl = self.system.layout.slices[y0_names[id(p)]]
                size = sl.stop - sl.start
                batched = p.dim() == 2
                for j in range(m):
                    e, i = (j // size, j % size) if batched else (None, j)
                    if e is None:
                        s0[:, k + j, sl.start + i] = 1.0
                    else:
                        s0[e, k + j, sl.start + i] = 1.0
            else:
                t = torch.zeros(P, m, dtype=p.dtype, device=p.device)
                t[k:k + m] = torch.eye(m, dtype=p.dtype, device=p.device)
                tangents[names[id(p)]] = t.reshape(P, *p.shape)
            k += m
        return SensitivityField(self.system, tangents, P), s0

    def residuals_and_jacobian(self, physical_only: bool = False) -> Evaluation:
        """Weighted residuals and their exact Jacobian w.r.t. the fitted vector (or only
        its physical part), by forward sensitivities (:mod:`physode.estimate.sensitivity`)."""
        key = bool(physical_only)
        if self._sens is None or self._sens[0] != key:
            self._sens = (key, *self._sensitivity_setup(key))
        _, field_, s0 = self._sens
        P = field_.n_dir
        self._nfe = 0
        y0 = self.initial_states().detach()
        n = y0.shape[-1]
        states: list[Tensor] = [y0[:0]] * len(self.obs.experiments)
        sens: list[Tensor] = [y0[:0]] * len(self.obs.experiments)
        with torch.no_grad():
            for g in self.groups:
                z0 = torch.cat([y0[g.exps], s0[g.exps].reshape(len(g.exps), P * n)], -1)
                zs = self._solve_states(field_, z0, g, None)
                for b, e in enumerate(g.exps):
                    states[e] = zs[:, b, :n]
                    sens[e] = zs[:, b, n:].reshape(-1, P, n)
            r = self.residual_tensor(states)
            cols = []
            for s in self.series:
                d = self._select(s, sens[s.exp][..., s.state], 2)  # (n_t, P, *obs)
                d = d.movedim(1, -1) * s.inv_sigma.unsqueeze(-1)
                cols.append(d[s.valid])
            J = torch.cat(cols) if cols else torch.zeros(0, P)
        return Evaluation(r.cpu().numpy(), J.cpu().numpy(), nfe=self._nfe)

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
        return float(np.dot(r, r)) if np.all(np.isfinite(r)) else math.inf


__all__ = ["Evaluation", "FitProblem", "Group", "Series"]
