"""Steady states: y* with f(t, y*) = 0, by Newton's method with an integration fallback, and
its gradient by the implicit function theorem.

Finding y* (as AMICI and Data2Dynamics pre-equilibrate; Kelley, *Solving Nonlinear
Equations with Newton's Method*, SIAM 2003, ch. 1–2):

1. damped Newton on f(y) = 0 from ``y0``, the Jacobian by autograd, each step halved
   until the residual norm decreases (Armijo backtracking);
2. when Newton fails, integrate from ``y0`` with a stiff method over growing spans
   (t + 10^-3, t + 10^-2, ... up to ``t_max``), polishing with Newton after each, until
   ``max |f|`` is small;
3. else :class:`~physode.errors.SteadyStateNotFound`, with the residual and time reached.

Conservation laws (conserved moieties of a reaction network, c·f(y) = 0 for every y) make
the Jacobian singular and the steady state a family, one per value of the conserved
totals. They are detected as the left null space of J common to ``y0`` and a nearby point
(an SVD), and the totals are taken from ``y0``: Newton then solves the square-in-rank,
overdetermined system [f(y); Cᵀ(y - y0)] = 0 by least squares (Gauss–Newton, a
pseudo-inverse step). Otherwise ``y0`` only picks which steady state is found when there
are several, and gets no gradient.

Gradient (implicit function theorem; Griewank & Walther, *Evaluating Derivatives*, 2nd
ed., §15.1; as in AMICI's steady-state sensitivities): differentiating
F(y*, θ, y0) = [f(y*; θ); Cᵀ(y* - y0)] = 0 gives A dy* = -[f_θ dθ; -Cᵀ dy0] with
A = [J; Cᵀ], so for a cotangent v of y*, w = (A⁺)ᵀ v (a linear solve Jᵀ w = v without
conservation laws) and dL/dθ = -f_θᵀ w₁ (one vector–Jacobian product of f), dL/dy0 = C w₂.
No solve is differentiated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from physode.errors import InvalidArgument, SolverError, SteadyStateNotFound
from physode.ode.methods.step import VectorField, time_tensor
from physode.ode.solve import check_state, solve


@dataclass(frozen=True)
class _Settings:
    t: float
    tol: float
    max_iter: int
    method: str
    rtol: float
    atol: float
    t_max: float


def _field(func: VectorField, t: float, y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """f(t, y) over the flattened state."""
    return func(time_tensor(t, y), y.reshape(shape)).reshape(-1)


def _jacobian(func: VectorField, t: float, y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """J = df/dy (n x n, flattened state) by autograd (vectorised, else one row at a time)."""
    def flat(z: torch.Tensor) -> torch.Tensor:
        return _field(func, t, z, shape)

    with torch.enable_grad():
        z = y.detach()
        try:
            J = torch.autograd.functional.jacobian(  # type: ignore[no-untyped-call]
                flat, z, vectorize=True)
        except RuntimeError:  # an operation without a batching rule
            J = torch.autograd.functional.jacobian(flat, z)  # type: ignore[no-untyped-call]
    assert isinstance(J, torch.Tensor)
    return J.detach()


def _residual(f: torch.Tensor) -> float:
    return float(f.abs().max()) if f.numel() else 0.0


def _converged(f: torch.Tensor, y: torch.Tensor, tol: float) -> bool:
    return _residual(f) <= tol * max(1.0, float(y.abs().max()))


def _conservation(func: VectorField, t: float, y0: torch.Tensor,
                  shape: torch.Size) -> torch.Tensor:
    """C (n x m): the left null vectors c (cᵀ J = 0) common to J at ``y0`` and at a nearby
    point — the conservation laws; m = 0 when there are none."""
    J0 = _jacobian(func, t, y0, shape)
    n = J0.shape[0]
    k = torch.arange(1, n + 1, dtype=y0.dtype, device=y0.device)
    nudge = 1e-3 * (1 + y0.abs()) * (0.5 + 0.5 * torch.frac(k * 0.6180339887498949))
    J1 = _jacobian(func, t, y0 + nudge, shape)
    both = torch.cat([J0, J1], 1) if bool(torch.isfinite(J1).all()) else J0
    if not bool(torch.isfinite(both).all()):
        return y0.new_zeros(n, 0)
    U, S, _ = torch.linalg.svd(both)
    top = float(S[0]) if S.numel() else 0.0
    if top == 0.0:
        return y0.new_zeros(n, 0)
    cut = 0.01 * math.sqrt(float(torch.finfo(y0.dtype).eps)) * top
    rank = int((S > cut).sum())
    C: torch.Tensor = U[:, rank:]
    return C


def _newton(func: VectorField, s: _Settings, y_start: torch.Tensor, y_ref: torch.Tensor,
            C: torch.Tensor, shape: torch.Size, max_iter: int) -> tuple[torch.Tensor, bool, float]:
    """Damped (Gauss–)Newton on [f(y); Cᵀ(y - y_ref)] = 0: (y, converged, max |f|)."""
    y = y_start.reshape(-1)

    def system(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = _field(func, s.t, z, shape)
        return f, torch.cat([f, C.T @ (z - y_ref)])

    f, r = system(y)
    for _ in range(max_iter):
        if not bool(torch.isfinite(r).all()):
            return y, False, math.inf
        if _converged(f, y, s.tol):
            return y, True, _residual(f)
        J = _jacobian(func, s.t, y, shape)
        A = torch.cat([J, C.T])
        step: torch.Tensor | None = None
        if C.shape[1] == 0:
            sol, info = torch.linalg.solve_ex(J, -r)
            step = sol if int(info) == 0 and bool(torch.isfinite(sol).all()) else None
        if step is None:  # conservation laws, or a singular J: least squares
            step = -(torch.linalg.pinv(A) @ r)
        norm = float(r.norm())
        lam = 1.0
        while lam >= 1e-6:
            y_new = y + lam * step
            f_new, r_new = system(y_new)
            if bool(torch.isfinite(r_new).all()) \
                    and float(r_new.norm()) <= (1 - 1e-4 * lam) * norm:
                break
            lam *= 0.5
        else:
            return y, _converged(f, y, s.tol), _residual(f)
        y, f, r = y_new, f_new, r_new
    return y, _converged(f, y, s.tol), _residual(f)


def find_steady_state(func: VectorField, y0: torch.Tensor,
                      s: _Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """(y*, C) by Newton, else integration plus Newton (see the module docstring)."""
    shape = y0.shape
    y_ref = y0.detach().reshape(-1)
    C = _conservation(func, s.t, y_ref, shape)
    y, ok, res = _newton(func, s, y_ref, y_ref, C, shape, s.max_iter)
    if ok:
        return y.reshape(shape), C
    best = res
    t_now, y_now, span = s.t, y0.detach(), 1e-3
    while t_now < s.t + s.t_max:
        t_next = min(s.t + span, s.t + s.t_max)
        try:
            sol = solve(func, y_now, [t_now, t_next], method=s.method, rtol=s.rtol, atol=s.atol,
                        gradient="direct")
        except SolverError as exc:
            raise SteadyStateNotFound(
                f"no steady state found: Newton stopped at max |f| = {best:.3g}, and "
                f"integrating from t={s.t:.6g} failed at t={exc.t:.6g} ({exc})", exc.t,
                best) from None
        t_now, y_now = t_next, sol.ys[-1]
        f = _field(func, t_now, y_now.reshape(-1), shape)
        best = min(best, _residual(f))
        if _converged(f, y_now, s.tol):
            return y_now, C
        y, ok, res = _newton(func, s, y_now.reshape(-1), y_now.reshape(-1), C, shape, 10)
        best = min(best, res)
        if ok:
            return y.reshape(shape), C
        span *= 10
    raise SteadyStateNotFound(
        f"no steady state found: Newton from y0 stopped, and after integrating to "
        f"t={t_now:.6g} the smallest max |f(y)| was {best:.3g} > tol={s.tol:g} (scaled by "
        "max(1, max |y|)); the system may oscillate or grow without bound, or need a larger "
        "tol or t_max", t_now, best)


class _Steady(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, func: VectorField, s: _Settings, y0: torch.Tensor,
                *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y, C = find_steady_state(func, y0, s)
        ctx.func, ctx.s, ctx.C, ctx.params = func, s, C, params
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError("double backward through steady_state is not supported")
        (y,) = ctx.saved_tensors
        func: VectorField = ctx.func
        s: _Settings = ctx.s
        C: torch.Tensor = ctx.C
        params: tuple[torch.Tensor, ...] = ctx.params
        v = grads[0].reshape(-1)
        n, m = v.numel(), C.shape[1]
        J = _jacobian(func, s.t, y.reshape(-1), y.shape)
        w: torch.Tensor | None = None
        if m == 0:
            sol, info = torch.linalg.solve_ex(J.T, v)
            w = sol if int(info) == 0 and bool(torch.isfinite(sol).all()) else None
        if w is None:
            w = torch.linalg.pinv(torch.cat([J, C.T])).T @ v
        w1, w2 = w[:n], w[n:]
        g_params: list[torch.Tensor | None] = [None] * len(params)
        wanted = [i for i, p in enumerate(params) if ctx.needs_input_grad[3 + i]]
        if wanted:
            with torch.enable_grad():
                f = _field(func, s.t, y.reshape(-1).detach(), y.shape)
                got = torch.autograd.grad(f, [params[i] for i in wanted], -w1,
                                          allow_unused=True)
            for i, g in zip(wanted, got):
                g_params[i] = g
        g_y0 = None
        if ctx.needs_input_grad[2]:
            g_y0 = (C @ w2).reshape(y.shape) if m else torch.zeros_like(y)
        return (None, None, g_y0, *g_params)


def _params(func: VectorField, params: Iterable[torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
    if params is None:
        if isinstance(func, torch.nn.Module):
            return tuple(p for p in func.parameters() if p.requires_grad)
        return ()
    if isinstance(params, torch.Tensor):
        raise InvalidArgument("params must be a sequence of tensors, got one tensor; write "
                              "params=(x,)")
    ps = tuple(params)
    for i, p in enumerate(ps):
        if not isinstance(p, torch.Tensor):
            raise InvalidArgument(f"params[{i}] is a {type(p).__name__}, not a tensor")
    return ps


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (math.isfinite(value) and value > 0):
        raise InvalidArgument(f"steady_state: {name} must be a positive finite number, got "
                              f"{value!r}")
    return float(value)


def steady_state(func: VectorField, y0: torch.Tensor, *,
                 params: Iterable[torch.Tensor] | None = None, t: float = 0.0,
                 tol: float = 1e-10, max_iter: int = 50, method: str = "rodas4",
                 rtol: float = 1e-8, atol: float = 1e-10, t_max: float = 1e9) -> torch.Tensor:
    """A state ``y*`` with ``func(t, y*) = 0`` near ``y0``, differentiable by the implicit
    function theorem.

    ``func(t, y)``: the vector field, evaluated at the fixed time ``t``. ``y0``: the start
    of the search; with conservation laws (a singular Jacobian, e.g. conserved moieties)
    it also fixes the conserved totals, and then gets their gradient; otherwise it only
    picks which steady state is found and gets a zero gradient. ``params``: tensors to
    differentiate (default: the trainable parameters of an ``nn.Module`` ``func``).
    ``tol``: converged when ``max |f(y*)| ≤ tol · max(1, max |y*|)``. ``max_iter``: Newton
    iterations from ``y0``. ``method``, ``rtol``, ``atol``, ``t_max``: the integration
    fallback (to t + t_max at most). Raises :class:`~physode.errors.SteadyStateNotFound`
    when neither converges.
    """
    if not callable(func):
        raise InvalidArgument(f"func must be callable as func(t, y), got {type(func).__name__}")
    y0 = check_state(y0)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise InvalidArgument(f"steady_state: max_iter must be an integer >= 1, got "
                              f"{max_iter!r}")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise InvalidArgument(f"steady_state: t must be a finite number, got {t!r}")
    s = _Settings(float(t), _positive("tol", tol), max_iter, method, _positive("rtol", rtol),
                  _positive("atol", atol), _positive("t_max", t_max))
    ps = _params(func, params)
    out: torch.Tensor = _Steady.apply(func, s, y0, *ps)  # type: ignore[no-untyped-call]
    return out


__all__ = ["find_steady_state", "steady_state"]
