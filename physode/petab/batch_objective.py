"""Residuals of a PEtab problem and their Jacobian for many parameter vectors at once.

:class:`BatchResiduals` evaluates ``B`` parameter vectors ``theta`` (rows, on their PEtab
scales) in one pass: each simulation condition is one batched forward-sensitivity solve
(:func:`physode.ode.sensitivity_batch.solve_sensitivities`, a step size per row), and the
observables, noise formulas and residuals are evaluated on all rows together, their
derivatives in ``theta`` by forward-mode differentiation along the ``q`` parameter
directions (the sensitivities are the tangents of the states). This is what a multistart
least-squares fit needs per iteration of all its starts (:mod:`physode.petab.batch_fit`).

The residual vector of one row makes ``nllh = ½ Σ r² + c`` exactly, with ``c`` independent
of ``theta``: the data residuals of :meth:`physode.estimate.noise.NoiseModel.residuals`,
then for every measurement ``sqrt(2 (ln σ + C))`` (the form Data2Dynamics uses for
estimated noise parameters: Raue et al., Bioinformatics 31:3558, 2015), ``C`` large enough
that the root is real. Measurements missing (NaN) contribute nothing.

Pre-equilibration and steady-state (``inf``) measurements: the states and their
sensitivities are integrated to ``SolverOptions.steady_horizon`` (steps grow
geometrically once the state rests, so the horizon costs a few steps per decade) and a row
counts as steady when ``||dx/dt||_wrms <= 1`` there, with weights ``1 / (steady_atol +
steady_rtol |x|)`` as in :func:`physode.petab.simulate.steady_state`; the sensitivities
at the horizon are those of the steady state (their transients decay with the state's),
and conserved totals stay those of the start, as AMICI's pre-equilibration keeps them.
:func:`supports` says whether a problem qualifies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor

from physode.ode.sensitivity_batch import (
    SensitivityField,
    SensitivityResult,
    solve_sensitivities,
)
from physode.ode.sensitivity_step import TABLEAUS
from physode.petab.objective import ObservableGroup, PetabObjective, scale_to_lin
from physode.petab.simulate import SolverOptions
from physode.petab.tables import Sources

_C = 50.0
"""The offset of the noise residual ``sqrt(2 (ln σ + C))``: real for ``σ > e^-50``."""

_LN10 = math.log(10.0)


def supports(objective: PetabObjective) -> str | None:
    """``None`` when :class:`BatchResiduals` can evaluate ``objective``, else the reason:
    there must be something to fit."""
    if not objective.free:
        return "no parameter is estimated"
    return None


def sensitivity_field(objective: PetabObjective) -> SensitivityField:
    """The generated model's functions as a :class:`SensitivityField`."""
    m = objective.model.module
    return SensitivityField(m.rhs, m.jacobian, m.param_jacobian, bool(m.AUTONOMOUS),
                            m.jacobian_dir, m.param_jacobian_dir, m.time_derivative,
                            m.jacobian_dt, m.param_jacobian_dt)


@dataclass
class BatchEvaluation:
    """Per row: residuals ``r (B, m)``, Jacobian ``jac (B, m, q)``, ``nllh (B,)``, ``ok
    (B,)`` (the solve reached every output and everything is finite) and the expected
    Fisher information ``fim (B, q, q)``.

    The Fisher information of a measurement with location ``T(y)`` and scale ``σ`` is
    ``a aᵀ + k ∇lnσ ∇lnσᵀ`` with ``a = ∇T(y) / σ``, ``k = 2`` for normal noise and
    ``k = 1`` for Laplace noise (scale ``σ = b``: location information ``1/b²``, and
    ``1`` for ``ln b``). Unlike ``jacᵀ jac``, whose noise part
    holds the observed ``(d/σ)²`` and the small rows of the σ residuals, it is the
    covariance's inverse a reviewer expects (Raue et al., Bioinformatics 25:1923, 2009)."""

    r: Tensor
    jac: Tensor
    nllh: Tensor
    ok: Tensor
    fim: Tensor


def _gather(lin: Tensor, dlin: Tensor, src: Sources) -> tuple[Tensor, Tensor]:
    """Values ``lin[..., idx]`` or constants, and their derivatives in ``theta``:
    ``(B, *idx.shape)`` and ``(B, *idx.shape, q)``."""
    idx = torch.as_tensor(src.idx)
    deriv = torch.where((idx >= 0)[..., None], dlin[:, idx.clamp(min=0)],
                        torch.zeros((), dtype=lin.dtype))
    return PetabObjective.gather(lin, src), deriv


class BatchResiduals:
    """See the module docstring; ``objective`` must pass :func:`supports`."""

    def __init__(self, objective: PetabObjective, options: SolverOptions,
                 compile: bool | None = None) -> None:
        reason = supports(objective)
        if reason is not None:
            raise ValueError(f"{objective.where}: batched evaluation unsupported: {reason}")
        self.obj = objective
        self.options = options
        self.compile = options.compile if compile is None else compile
        self.field = sensitivity_field(objective)
        # the staggered solver steps RODAS4 or RODAS5P; any other method gets RODAS4
        self.method = options.method if options.method in TABLEAUS else "rodas4"
        self.free = torch.tensor(objective.free, dtype=torch.long)
        self.scales = objective.free_scales
        # per group: (simulation, time position) of each row; inf: the steady state, after
        # the finite times
        self.positions = []
        for g in objective.groups:
            sims = [objective.simulations[s] for s, _ in g.time_pos]
            self.positions.append(
                (torch.tensor([s for s, _ in g.time_pos]),
                 torch.tensor([len(sim.times) if math.isinf(t) else sim.times.index(t)
                               for sim, (_, t) in zip(sims, g.time_pos)])))

    def lin(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """All parameters on the linear scale ``(B, N)`` and ``d lin / d theta``
        ``(B, N, q)``."""
        B, q = theta.shape
        lin = self.obj.nominal.expand(B, -1).clone()
        lin[:, self.free] = scale_to_lin(theta.T, self.scales).T
        dlin = theta.new_zeros((B, len(self.obj.nominal), q))
        for a, (i, s) in enumerate(zip(self.obj.free, self.scales)):  # d lin_i / d theta_a
            dlin[:, i, a] = 1.0 if s == "lin" else lin[:, i] if s == "log" else \
                lin[:, i] * _LN10
        return lin, dlin

    def _initial(self, p: Tensor, dp: Tensor, lin: Tensor, dlin: Tensor,
                 overrides: list[tuple[int, int, float]],
                 start: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Initial states ``(B, n)`` and their sensitivities ``(B, n, q)``: the model's
        initial values, or ``start`` (a pre-equilibrated state and its sensitivities),
        with the condition's overrides."""
        q = dp.shape[2]
        if start is not None:
            x, s = start[0].clone(), start[1].clone()
            for i, idx, c in overrides:
                x[:, i] = lin[:, idx] if idx >= 0 else c
                s[:, i] = dlin[:, idx] if idx >= 0 else 0.0
            return x, s
        with fwad.dual_level():
            pd_ = fwad.make_dual(p.expand(q, -1, -1).contiguous(),
                                 dp.permute(2, 0, 1).contiguous())
            x0, dx0 = fwad.unpack_dual(self.obj.model.initial(pd_))
        x = x0[0].clone()
        s = (torch.zeros((q, *x.shape), dtype=x.dtype) if dx0 is None
             else dx0.expand(q, *x.shape)).permute(1, 2, 0).clone()
        for i, idx, c in overrides:
            x[:, i] = lin[:, idx] if idx >= 0 else c
            s[:, i] = dlin[:, idx] if idx >= 0 else 0.0
        return x, s

    def states(self, lin: Tensor, dlin: Tensor) -> tuple[list[tuple[Tensor, Tensor, Tensor,
                                                                   Tensor]], Tensor]:
        """Per simulation ``(x (B, T, n), s (B, T, n, q), p (B, P), dp (B, P, q))`` (``T``:
        its finite times, then the steady state if it has ``inf`` measurements) and the
        rows whose solves all succeeded."""
        ok = torch.ones(len(lin), dtype=torch.bool)
        out = []
        for sim in self.obj.simulations:
            start = None
            if sim.preequilibration is not None and sim.pre_params is not None:
                pp, dpp = _gather(lin, dlin, sim.pre_params)
                xp, sp = self._initial(pp, dpp, lin, dlin, sim.pre_overrides)
                xe, se, okp = self._steady(pp, dpp, xp, sp)
                ok &= okp
                start = (xe, se)
            p, dp = _gather(lin, dlin, sim.params)
            x0, s0 = self._initial(p, dp, lin, dlin, sim.overrides, start)
            xs, ss = x0[:, :0], s0[:, :0]
            if sim.times:
                res = self._solve(p, dp, x0, s0, torch.tensor(sim.times, dtype=lin.dtype))
                xs, ss = res.x, res.s
                ok &= res.ok
            if sim.steady:
                xe, se, oks = self._steady(p, dp, x0, s0)
                xs, ss = torch.cat([xs, xe[:, None]], 1), torch.cat([ss, se[:, None]], 1)
                ok &= oks
            out.append((xs, ss, p, dp))
        return out, ok

    def _solve(self, p: Tensor, dp: Tensor, x0: Tensor, s0: Tensor,
               times: Tensor) -> SensitivityResult:
        """One batched sensitivity solve from time 0, through the model's breakpoints."""
        breaks = None
        if self.obj.model.n_breakpoints:
            bp = self.obj.model.breakpoints(p)
            breaks = torch.stack([torch.as_tensor(b, dtype=p.dtype).expand(len(p))
                                  for b in bp], dim=1)
        opts = self.options
        return solve_sensitivities(self.field, x0, s0, p, dp, times, breaks=breaks,
                                   rtol=opts.rtol, atol=opts.atol, max_steps=opts.max_steps,
                                   compile=self.compile, method=self.method)

    def _steady(self, p: Tensor, dp: Tensor, x0: Tensor,
                s0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """States and sensitivities at the steady-state horizon, and which rows rest
        there (see the module docstring)."""
        opts = self.options
        horizon = torch.tensor([opts.steady_horizon], dtype=p.dtype)
        res = self._solve(p, dp, x0, s0, horizon)
        x, s = res.x[:, 0], res.s[:, 0]
        t = horizon.expand(len(p))
        f = self.field.rhs(t, torch.nan_to_num(x), p)
        w = opts.steady_atol + opts.steady_rtol * x.abs()
        rest = ((f / w) ** 2).mean(dim=1).sqrt() <= 1.0
        return x, s, res.ok & rest

    def __call__(self, theta: Tensor) -> BatchEvaluation:
        """Residuals, Jacobian and nllh of every row of ``theta (B, q)``."""
        theta = torch.as_tensor(theta, dtype=self.obj.dtype)
        with torch.no_grad():
            lin, dlin = self.lin(theta)
            sims, ok = self.states(lin, dlin)
            rs, js, nllh = [], [], theta.new_zeros(len(theta))
            fim = theta.new_zeros((*theta.shape, theta.shape[1]))
            for g, (sim_idx, tpos) in zip(self.obj.groups, self.positions):
                r, j, v, f = self._group(g, sim_idx, tpos, sims, lin, dlin)
                rs.append(r)
                js.append(j)
                nllh = nllh + v
                fim = fim + f
            r = torch.cat(rs, dim=1)
            jac = torch.cat(js, dim=1)
            finite = torch.isfinite(r).all(1) & torch.isfinite(jac).flatten(1).all(1) & \
                torch.isfinite(nllh)
            return BatchEvaluation(r, jac, nllh, ok & finite, fim)

    def _group(self, g: ObservableGroup, sim_idx: Tensor, tpos: Tensor,
               sims: list[tuple[Tensor, Tensor, Tensor, Tensor]], lin: Tensor,
               dlin: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Residuals ``(B, 2 m)``, their Jacobian, the nllh and the Fisher information of
        one observable group."""
        B, q = dlin.shape[0], dlin.shape[2]
        m = len(sim_idx)
        n, P = sims[0][0].shape[2], sims[0][2].shape[1]
        x, sx = lin.new_zeros((B, m, n)), lin.new_zeros((B, m, n, q))
        p, dp = lin.new_zeros((B, m, P)), lin.new_zeros((B, m, P, q))
        for s, (xs, ss, ps, dps) in enumerate(sims):
            rows = (sim_idx == s).nonzero()[:, 0]
            x[:, rows], sx[:, rows] = xs[:, tpos[rows]], ss[:, tpos[rows]]
            p[:, rows], dp[:, rows] = ps[:, None], dps[:, None]
        op, dop = _gather(lin, dlin, g.op)
        npar, dnp = _gather(lin, dlin, g.np_)
        t = g.time
        model = self.obj.model
        with fwad.dual_level():
            def dual(v: Tensor, dv: Tensor) -> Tensor:
                return fwad.make_dual(v.expand(q, *v.shape).contiguous(),
                                      dv.movedim(-1, 0).contiguous())

            xd, pd_, opd, npd = dual(x, sx), dual(p, dp), dual(op, dop), dual(npar, dnp)
            y = model.observable(g.k)(t, xd, pd_, opd)
            sigma = model.sigma(g.k)(t, xd, pd_, opd, npd)
            shape = (q, B, m)
            y = y.expand(shape) if isinstance(y, Tensor) else xd.new_full(shape, float(y))
            sigma = (sigma.expand(shape) if isinstance(sigma, Tensor)
                     else xd.new_full(shape, float(sigma)))
            r_data = g.noise.residuals(y, g.meas, sigma)
            present = ~torch.isnan(g.meas)
            r_sigma = torch.where(present, torch.sqrt(2.0 * (torch.log(sigma) + _C)),
                                  torch.zeros_like(sigma))
            r = torch.cat([r_data, r_sigma], dim=-1)
            r_p, r_t = fwad.unpack_dual(r)
            y_p = fwad.unpack_dual(y)[0][0]
            s_p = fwad.unpack_dual(sigma)[0][0]
            a = _tangent(torch.where(present, g.noise.transform(y) / sigma,
                                     torch.zeros_like(sigma)), (q, B, m))
            b = _tangent(torch.where(present, torch.log(sigma), torch.zeros_like(sigma)),
                         (q, B, m))
        jac = (torch.zeros((q, B, 2 * m), dtype=x.dtype) if r_t is None
               else r_t.expand(q, B, 2 * m)).permute(1, 2, 0)
        value = g.noise.nllh_terms(y_p, g.meas, s_p).sum(dim=1)
        # a = ∇T(y)/σ: the tangent of T(y)/σ minus its σ part, T(y)/σ · ∇lnσ
        a = a + (g.noise.transform(y_p) / s_p).nan_to_num()[None] * b
        ks = 2.0 if g.noise.distribution == "normal" else 1.0
        fim = torch.einsum("ibm,jbm->bij", a, a) + ks * torch.einsum("ibm,jbm->bij", b, b)
        return r_p[0], jac, value, fim


def _tangent(v: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The forward-mode tangent of ``v`` (zeros when it has none), broadcast to
    ``shape``."""
    t = fwad.unpack_dual(v).tangent
    return torch.zeros(shape, dtype=v.dtype) if t is None else t.expand(shape)


__all__ = ["BatchEvaluation", "BatchResiduals", "sensitivity_field", "supports"]
