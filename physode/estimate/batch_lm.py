"""Levenberg–Marquardt for many starts at once, within bounds: :func:`batch_least_squares`.

Every start (a row of ``x0``) runs its own bound-constrained Levenberg–Marquardt iteration
— its own damping, acceptance, convergence — but the residuals and Jacobians of all
unfinished starts are evaluated in one call of ``fun``, so a vectorised evaluator (one
batched solve for all starts, :mod:`physode.petab.batch_objective`) pays its fixed costs
once per iteration rather than once per start.

One iteration of a start, with gradient ``g = Jᵀr`` and ``A = JᵀJ``: the step solves
``(A + λ diag(A)) δ = -g`` (Marquardt's scaling; Moré, "The Levenberg–Marquardt algorithm:
implementation and theory", LNM 630, 1978) over the free variables, those not held at a
bound by a gradient pointing outwards, and is then projected onto the box (a projected
Levenberg–Marquardt method: Kanzow, Yamashita & Fukushima, J. Comput. Appl. Math.
172:375, 2004). The trial point is accepted when the actual reduction of ``½‖r‖²`` is a
positive fraction of the reduction the linear model predicts; ``λ`` follows Nielsen's
update (Madsen, Nielsen & Tingleff, "Methods for non-linear least squares problems",
IMM DTU 2004, sec. 3.2). A start stops when the decrease of the cost over an accepted
step is below ``ftol`` relative to the cost or below ``fatol``, the step is below
``xtol`` relative to ``x``, the projected gradient's largest entry is below ``gtol``, its
evaluation fails at the start, or after ``max_iter`` iterations.

``fun`` may return its own curvature matrix in place of ``JᵀJ``: the expected Fisher
information, for a likelihood whose noise parameters are fitted (Fisher scoring: Osborne,
Int. Stat. Rev. 60:99, 1992). There ``JᵀJ`` underestimates the curvature in ``ln σ`` by
half at the optimum (the residuals ``d/σ`` are not linear in ``ln σ``), so Gauss–Newton
steps in ``σ`` overshoot twofold and convergence crawls; the Fisher information has the
right curvature, and the gradient ``Jᵀr`` stays exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

#: ``fun(x (B, q)) -> (r (B, m), J (B, m, q), ok (B,))``, or with a fourth entry, the
#: curvature matrix ``(B, q, q)`` to use in place of ``JᵀJ`` (see the module docstring)
BatchFun = Callable[[Tensor], tuple[Tensor, ...]]


@dataclass
class BatchLSResult:
    """Per start: final ``x (B, q)``, ``cost = ½‖r‖²`` (``inf`` for failed starts),
    ``status`` ("converged", "max_iter", "stalled" or "failed"), iterations ``nit`` and
    evaluations ``nfev``, the curvature matrix (``JᵀJ`` or ``fun``'s own) ``(B, q, q)`` at
    ``x``, and the cost
    history of each start."""

    x: Tensor
    cost: Tensor
    status: list[str]
    nit: Tensor
    nfev: Tensor
    jtj: Tensor
    history: list[list[float]] = field(default_factory=list)
    wall_time: float = 0.0


def _free(x: Tensor, g: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """Variables that may move: not at a bound with the gradient pushing past it."""
    span = (upper - lower).clamp(min=1.0)
    at_lo = (x - lower <= 1e-10 * span) & (g > 0)
    at_hi = (upper - x <= 1e-10 * span) & (g < 0)
    return ~(at_lo | at_hi)


def _step(jtj: Tensor, g: Tensor, lam: Tensor, free: Tensor) -> Tensor:
    """The damped Gauss–Newton step over the free variables (zero on the others)."""
    q = g.shape[1]
    d = torch.diagonal(jtj, dim1=1, dim2=2).clamp(min=1e-12)
    A = jtj + torch.diag_embed(lam[:, None] * d)
    mask = free[:, :, None] & free[:, None, :]
    eye = torch.eye(q, dtype=g.dtype).expand_as(A)
    A = torch.where(mask, A, eye)
    rhs = torch.where(free, -g, torch.zeros_like(g))
    sol, info = torch.linalg.solve_ex(A, rhs[:, :, None])
    step = sol[:, :, 0]
    return torch.where((info == 0)[:, None] & free & torch.isfinite(step), step,
                       torch.zeros_like(step))


def _evaluate(fun: BatchFun, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(r, J, ok, curvature)``: ``fun``'s own curvature matrix, else ``JᵀJ``."""
    out = fun(x)
    r, J, ok = out[:3]
    curvature = out[3] if len(out) > 3 else J.transpose(1, 2) @ J
    return r, J, ok, curvature


def batch_least_squares(fun: BatchFun, x0: Tensor, lower: Tensor, upper: Tensor, *,
                        max_iter: int = 200, ftol: float = 1e-10, fatol: float = 0.0,
                        xtol: float = 1e-10, gtol: float = 1e-8, lam0: float = 1e-3,
                        callback: Callable[[int, Tensor], None] | None = None
                        ) -> BatchLSResult:
    """Minimise ``½‖r(x)‖²`` from every row of ``x0`` within ``[lower, upper]``; see the
    module docstring. An accepted step whose decrease of the cost is at most ``ftol``
    times the cost, or at most ``fatol``, ends a start. ``callback(iteration, cost)`` sees
    the costs after each iteration."""
    t0 = time.perf_counter()
    B, q = x0.shape
    x = torch.minimum(torch.maximum(x0.clone(), lower), upper)
    r, J, ok, jtj = _evaluate(fun, x)
    nfev = torch.ones(B, dtype=torch.long)
    nit = torch.zeros(B, dtype=torch.long)
    cost = torch.where(ok, 0.5 * (r * r).sum(1), torch.full((B,), math.inf, dtype=x.dtype))
    g = (J.transpose(1, 2) @ r[:, :, None])[:, :, 0]
    lam = torch.full((B,), lam0, dtype=x.dtype)
    nu = torch.full((B,), 2.0, dtype=x.dtype)
    status = ["failed" if not bool(o) else "" for o in ok]
    history = [[float(c)] if bool(o) else [] for c, o in zip(cost, ok)]
    active = ok.clone()
    for it in range(max_iter):
        rows = active.nonzero()[:, 0]
        if not len(rows):
            break
        free = _free(x[rows], g[rows], lower, upper)
        pg = torch.where(free, g[rows], torch.zeros_like(g[rows]))
        small_g = pg.abs().amax(1) <= gtol
        step = _step(jtj[rows], g[rows], lam[rows], free)
        x_try = torch.minimum(torch.maximum(x[rows] + step, lower), upper)
        step = x_try - x[rows]
        predicted = -((g[rows] * step).sum(1)
                      + 0.5 * (step[:, None, :] @ jtj[rows] @ step[:, :, None])[:, 0, 0])
        r_t, J_t, ok_t, jtj_t = _evaluate(fun, x_try)
        nfev[rows] += 1
        nit[rows] += 1
        cost_t = torch.where(ok_t, 0.5 * (r_t * r_t).sum(1),
                             torch.full_like(predicted, math.inf))
        actual = cost[rows] - cost_t
        rho = actual / predicted.clamp(min=1e-300)
        accept = ok_t & (actual > 0) & (rho > 1e-4)
        # Nielsen's damping update
        shrink = torch.clamp(1.0 - (2.0 * rho - 1.0) ** 3, min=1.0 / 3.0)
        lam_r = torch.where(accept, lam[rows] * shrink, lam[rows] * nu[rows])
        nu_r = torch.where(accept, torch.full_like(nu[rows], 2.0), nu[rows] * 2.0)
        small_f = accept & ((actual <= ftol * cost[rows].abs().clamp(min=1e-300))
                            | (actual <= fatol))
        small_x = step.norm(dim=1) <= xtol * (x[rows].norm(dim=1) + xtol)
        a = accept.nonzero()[:, 0]
        if len(a):
            ra = rows[a]
            x[ra], cost[ra] = x_try[a], cost_t[a]
            jtj[ra] = jtj_t[a]
            g[ra] = (J_t[a].transpose(1, 2) @ r_t[a][:, :, None])[:, :, 0]
        lam[rows], nu[rows] = lam_r, nu_r
        for i, b in enumerate(rows.tolist()):
            if bool(accept[i]):
                history[b].append(float(cost_t[i]))
            done = ("converged" if bool(small_f[i] | small_g[i] | small_x[i])
                    else "stalled" if float(lam_r[i]) > 1e16 else "")
            if done:
                status[b] = done
                active[b] = False
        if callback is not None:
            callback(it + 1, cost)
    for b in range(B):
        if not status[b]:
            status[b] = "max_iter"
    return BatchLSResult(x, cost, status, nit, nfev, jtj, history,
                         time.perf_counter() - t0)


__all__ = ["BatchFun", "BatchLSResult", "batch_least_squares"]
