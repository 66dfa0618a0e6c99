"""The PEtab negative log-likelihood of a parameter vector: simulate every condition,
evaluate the observables at the measurements, sum the noise model's terms.

:class:`PetabObjective` is built once from the tables and the generated model; calling
it on ``theta`` (the estimated parameters on their PEtab scale, as pyPESTO fits them)
runs one solve per simulation (a simulation condition with its optional
pre-equilibration condition), gathers the states at the measurement times (``inf``: the
steady state), and sums :class:`physode.estimate.noise.NoiseModel` terms (normalisation
constants included, so the value compares with AMICI's ``llh``). It is differentiable
in ``theta`` by the solver's gradient mode (ACA by default). Priors
(``objectivePriorType``) are a separate term, :meth:`PetabObjective.prior`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from physode.errors import InvalidObservations, SolverError
from physode.estimate.noise import NoiseModel
from physode.petab.cache import GeneratedModel
from physode.petab.simulate import GeneratedField, SolverOptions, equilibrate, solve_to
from physode.petab.tables import ParameterTable, Sources, split_overrides, value_source

_LN10 = math.log(10.0)


def _nan(x: object) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


@dataclass
class Simulation:
    """One simulation: its condition(s), parameter sources, overrides and output times."""

    condition: str
    preequilibration: str | None
    params: Sources  # model + extra parameters in this simulation
    pre_params: Sources | None
    overrides: list[tuple[int, int, float]]  # (state, parameter index or -1, constant)
    pre_overrides: list[tuple[int, int, float]]
    times: list[float]  # sorted unique finite output times
    steady: bool  # some measurement is at t = inf


@dataclass
class ObservableGroup:
    """All measurements of one observable, vectorised over rows."""

    k: int
    id: str
    noise: NoiseModel
    rows: np.ndarray  # row numbers in the measurement table
    sim: Tensor  # (m,) simulation index
    state_row: Tensor  # (m,) row in the stacked state tensor (filled per call)
    time_pos: list[tuple[int, float]]  # per row: (simulation, time)
    time: Tensor
    meas: Tensor
    op: Sources
    np_: Sources


def scale_to_lin(theta: Tensor, scales: list[str]) -> Tensor:
    """Parameters from their PEtab scale to the linear scale."""
    out = []
    for i, s in enumerate(scales):
        v = theta[i]
        out.append(v if s == "lin" else torch.exp(v) if s == "log" else 10.0 ** v)
    return torch.stack(out) if out else theta


def lin_to_scale(values: np.ndarray, scales: list[str]) -> np.ndarray:
    """Parameters from the linear scale to their PEtab scale."""
    return np.array([v if s == "lin" else math.log(v) if s == "log" else math.log10(v)
                     for v, s in zip(values, scales)], dtype=np.float64)


class PetabObjective:
    """See the module docstring; ``where`` names the problem in errors."""

    def __init__(self, model: GeneratedModel, table: ParameterTable,
                 conditions: pd.DataFrame, measurements: pd.DataFrame,
                 observables: pd.DataFrame, where: str) -> None:
        self.model = model
        self.table = table
        self.where = where
        self.free = table.free
        self.free_scales = [table.scales[i] for i in self.free]
        self.dtype = torch.float64
        self.nominal = torch.tensor(np.nan_to_num(table.nominal), dtype=self.dtype)
        self.defaults = dict(zip(model.parameters, model.defaults))
        self.measurements = measurements.reset_index(drop=True)
        self.simulations = self._simulations(conditions)
        self.groups = self._groups(observables)

    # ------------------------------------------------------------------ building
    def _param_sources(self, cond: pd.Series | None, what: str) -> Sources:
        names = [*self.model.parameters, *self.model.extras]
        idx = np.full(len(names), -1, dtype=np.int64)
        const = np.full(len(names), np.nan)
        for j, name in enumerate(names):
            if name in self.table.index:
                idx[j] = self.table.index[name]
            elif name in self.defaults:
                const[j] = self.defaults[name]
            else:
                raise InvalidObservations(f"{self.where}: observable parameter {name!r} is not "
                                          "in the parameter table")
            if cond is not None and name in cond.index and not _nan(cond[name]):
                idx[j], const[j] = value_source(cond[name], self.table, self.defaults,
                                                f"{self.where}, {what}, column {name!r}")
        return Sources(idx, const)

    def _state_overrides(self, cond: pd.Series | None,
                         what: str) -> list[tuple[int, int, float]]:
        out: list[tuple[int, int, float]] = []
        if cond is None:
            return out
        for i, sid in enumerate(self.model.states):
            if sid in cond.index and not _nan(cond[sid]):
                idx, c = value_source(cond[sid], self.table, self.defaults,
                                      f"{self.where}, {what}, column {sid!r}")
                out.append((i, idx, c))
        return out

    def _simulations(self, conditions: pd.DataFrame) -> list[Simulation]:
        m = self.measurements
        pre_col = m["preequilibrationConditionId"] if "preequilibrationConditionId" in m \
            else pd.Series([np.nan] * len(m))
        keys = [(str(c), None if _nan(p) or p == "" else str(p))
                for c, p in zip(m["simulationConditionId"], pre_col)]
        self.sim_of_row = np.zeros(len(m), dtype=np.int64)
        order: dict[tuple[str, str | None], int] = {}
        for r, key in enumerate(keys):
            self.sim_of_row[r] = order.setdefault(key, len(order))
        sims = []
        for (cid, pid), s in order.items():
            cond = self._condition(conditions, cid)
            pre = self._condition(conditions, pid) if pid is not None else None
            times = m["time"].to_numpy(dtype=float)[self.sim_of_row == s]
            finite = sorted({float(t) for t in times if math.isfinite(t)})
            if any(t < 0 for t in finite):
                raise InvalidObservations(f"{self.where}: condition {cid!r} has a measurement "
                                          "at a negative time")
            sims.append(Simulation(
                cid, pid, self._param_sources(cond, f"condition {cid!r}"),
                None if pid is None else self._param_sources(pre, f"condition {pid!r}"),
                self._state_overrides(cond, f"condition {cid!r}"),
                self._state_overrides(pre, f"condition {pid!r}") if pid else [],
                finite, bool(np.isinf(times).any())))
        return sims

    def _condition(self, conditions: pd.DataFrame, cid: str) -> pd.Series:
        if cid not in conditions.index:
            raise InvalidObservations(f"{self.where}: condition {cid!r} of the measurement "
                                      "table is not in the condition table")
        row: pd.Series = conditions.loc[cid]
        return row

    def _groups(self, observables: pd.DataFrame) -> list[ObservableGroup]:
        m = self.measurements
        groups = []
        for k, oid in enumerate(self.model.observables):
            orow = observables.loc[oid]
            transform = orow.get("observableTransformation", "lin")
            dist = orow.get("noiseDistribution", "normal")
            noise = NoiseModel(dist if isinstance(dist, str) and dist else "normal",
                               transform if isinstance(transform, str) and transform else "lin")
            rows = np.flatnonzero(m["observableId"].to_numpy() == oid)
            if not len(rows):
                continue
            fn_args = self.model.module.__dict__
            n_op = _count(fn_args, f"observable_{k}", "op_")
            n_np = _count(fn_args, f"sigma_{k}", "np_")
            op = self._overrides(rows, "observableParameters", n_op, oid)
            npar = self._overrides(rows, "noiseParameters", n_np, oid)
            meas = torch.tensor(m["measurement"].to_numpy(dtype=float)[rows], dtype=self.dtype)
            noise.check_measurements(meas, f"{self.where}, observable {oid!r}")
            times = m["time"].to_numpy(dtype=float)[rows]
            sims = self.sim_of_row[rows]
            groups.append(ObservableGroup(
                k, oid, noise, rows, torch.tensor(sims), torch.zeros(len(rows), dtype=torch.long),
                [(int(s), float(t)) for s, t in zip(sims, times)],
                torch.tensor(np.where(np.isinf(times), 0.0, times), dtype=self.dtype), meas,
                op, npar))
        return groups

    def _overrides(self, rows: np.ndarray, column: str, n: int, oid: str) -> Sources:
        idx = np.full((len(rows), n), -1, dtype=np.int64)
        const = np.full((len(rows), n), np.nan)
        cells = self.measurements[column].to_numpy() if column in self.measurements else \
            [np.nan] * len(self.measurements)
        for a, r in enumerate(rows):
            where = f"{self.where}, measurement row {r + 1} ({oid}), {column}"
            for b, v in enumerate(split_overrides(cells[r], n, where)):
                idx[a, b], const[a, b] = value_source(v, self.table, self.defaults, where)
        return Sources(idx, const)

    # ------------------------------------------------------------------ evaluation
    def lin_values(self, theta: Tensor) -> Tensor:
        """The full parameter vector (linear scale) with ``theta`` for the free ones."""
        free = torch.tensor(self.free, dtype=torch.long)
        return self.nominal.index_put((free,), scale_to_lin(theta, self.free_scales))

    @staticmethod
    def gather(lin: Tensor, src: Sources) -> Tensor:
        """``lin[..., idx]`` where an entry is fitted, else its constant (``lin`` may
        carry leading batch axes)."""
        idx = torch.as_tensor(src.idx)
        const = torch.as_tensor(src.const, dtype=lin.dtype)
        return torch.where(idx >= 0, lin[..., idx.clamp(min=0)], const)

    def _start(self, lin: Tensor, params: Sources, overrides: list[tuple[int, int, float]],
               x0: Tensor | None) -> tuple[Tensor, Tensor]:
        p = self.gather(lin, params)
        x = self.model.initial(p) if x0 is None else x0
        for i, idx, c in overrides:
            x = x.clone()
            x[i] = lin[idx] if idx >= 0 else c
        return p, x

    def states(self, theta: Tensor, opts: SolverOptions, grad: bool) -> list[Tensor]:
        """Per simulation: states at its times (then the steady state if any) and ``p``."""
        lin = self.lin_values(theta)
        out: list[Tensor] = []
        self.sim_params: list[Tensor] = []
        self.fields: list[tuple[Tensor, GeneratedField]] = []  # (p, field): see gradient
        for s in self.simulations:
            where = f"{self.where}, condition {s.condition!r}"
            x0 = None
            try:
                if s.preequilibration is not None and s.pre_params is not None:
                    pp, xp = self._start(lin, s.pre_params, s.pre_overrides, None)
                    field = GeneratedField(self.model, pp)
                    self.fields.append((pp, field))
                    x0 = equilibrate(field, xp, self._breaks(pp), opts, grad,
                                      f"{self.where}, pre-equilibration {s.preequilibration!r}")
                p, x = self._start(lin, s.params, s.overrides, x0)
                field = GeneratedField(self.model, p)
                self.fields.append((p, field))
                xs = solve_to(field, x, s.times, self._breaks(p), opts, grad)
                if s.steady:
                    xs = torch.cat([xs, equilibrate(field, x, self._breaks(p), opts, grad,
                                                     where)[None]])
            except SolverError as exc:
                raise SolverError(f"{where}: {exc}", exc.t) from None
            out.append(xs)
            self.sim_params.append(p)
        return out

    def _breaks(self, p: Tensor) -> list[float]:
        if not self.model.n_breakpoints:
            return []
        return [float(b) for b in self.model.breakpoints(p.detach())]

    def predictions(self, theta: Tensor, opts: SolverOptions,
                    grad: bool) -> list[tuple[ObservableGroup, Tensor, Tensor]]:
        """Per observable group: ``(group, simulated observable, sigma)`` at its rows."""
        xs = self.states(theta, opts, grad)
        lin = self.lin_values(theta)
        offsets = np.cumsum([0] + [len(x) for x in xs])
        stacked = torch.cat(xs)
        P = torch.stack(self.sim_params)
        out = []
        for g in self.groups:
            rows = []
            for s, t in g.time_pos:
                sim = self.simulations[s]
                j = len(sim.times) if math.isinf(t) else sim.times.index(t)
                rows.append(offsets[s] + j)
            x = stacked[torch.tensor(rows)]
            p = P[g.sim]
            op = self.gather(lin, g.op)
            npar = self.gather(lin, g.np_)
            y = self.model.observable(g.k)(g.time, x, p, op)
            y = y.expand(g.meas.shape) if isinstance(y, Tensor) else g.meas.new_full(
                g.meas.shape, float(y))
            sigma = self.model.sigma(g.k)(g.time, x, p, op, npar)
            sigma = sigma.expand(g.meas.shape) if isinstance(sigma, Tensor) else \
                g.meas.new_full(g.meas.shape, float(sigma))
            out.append((g, y, sigma))
        return out

    def gradient(self, value: Tensor, theta: Tensor) -> Tensor:
        """d value / d theta after :meth:`states` with ``grad=True``: the solves
        differentiate with respect to their fields' leaf parameters (see
        :class:`~physode.petab.simulate.GeneratedField`), chained here to ``theta`` through
        the ``p`` each field was made from (one more backward pass, through the cheap
        gathers only)."""
        leaves = [f.p for _, f in self.fields if f.p.requires_grad]
        sources = [p for p, f in self.fields if f.p.requires_grad]
        grads = torch.autograd.grad(value, [theta, *leaves], allow_unused=True,
                                    retain_graph=bool(leaves))
        g = torch.zeros_like(theta) if grads[0] is None else grads[0]
        pairs = [(s, gl) for s, gl in zip(sources, grads[1:]) if gl is not None]
        if pairs:
            (more,) = torch.autograd.grad([s for s, _ in pairs], theta,
                                          grad_outputs=[gl for _, gl in pairs],
                                          allow_unused=True)
            if more is not None:
                g = g + more
        return g

    def nllh(self, theta: Tensor, opts: SolverOptions, grad: bool = False) -> Tensor:
        """The negative log-likelihood (normalisation included, priors excluded)."""
        total = theta.new_zeros(())
        for g, y, sigma in self.predictions(theta, opts, grad):
            total = total + g.noise.nllh(y, g.meas, sigma)
        return total

    def prior(self, theta: Tensor) -> Tensor:
        """-log prior density of the free parameters (PEtab objectivePrior*)."""
        total = theta.new_zeros(())
        lin = scale_to_lin(theta, self.free_scales)
        for a, i in enumerate(self.free):
            spec = self.table.priors[i]
            if spec is not None:
                total = total + prior_term(spec, theta[a], lin[a], self.table.ids[i])
        return total


def prior_term(spec: tuple[str, list[float]], scaled: Tensor, lin: Tensor, pid: str) -> Tensor:
    """-log density of one PEtab prior (types of the PEtab v1 specification)."""
    kind, par = spec
    x = scaled if kind.startswith("parameterScale") else lin
    base = kind.removeprefix("parameterScale")
    base = base[0].lower() + base[1:] if base else base
    if base in ("uniform",):
        return x.new_full((), math.log(par[1] - par[0]))
    if base == "normal":
        return 0.5 * math.log(2 * math.pi * par[1] ** 2) + 0.5 * ((x - par[0]) / par[1]) ** 2
    if base == "laplace":
        return math.log(2 * par[1]) + torch.abs(x - par[0]) / par[1]
    if base == "logNormal":
        return (torch.log(x) + 0.5 * math.log(2 * math.pi * par[1] ** 2)
                + 0.5 * ((torch.log(x) - par[0]) / par[1]) ** 2)
    if base == "logLaplace":
        return torch.log(x) + math.log(2 * par[1]) + torch.abs(torch.log(x) - par[0]) / par[1]
    raise InvalidObservations(f"parameter {pid!r}: unknown objectivePriorType {kind!r}")


def _count(namespace: dict[str, object], fn: str, prefix: str) -> int:
    """How many placeholder inputs (``op_i`` / ``np_i``) generated function ``fn`` reads."""
    code = getattr(namespace[fn], "__code__", None)
    names = code.co_varnames if code is not None else ()
    used = [int(n[len(prefix):]) for n in names if n.startswith(prefix) and
            n[len(prefix):].isdigit()]
    return max(used, default=-1) + 1


__all__ = ["ObservableGroup", "PetabObjective", "Simulation", "lin_to_scale", "prior_term",
           "scale_to_lin"]
