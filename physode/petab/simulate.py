"""Solving one PEtab simulation: the generated field, breakpoints and steady states.

:class:`GeneratedField` is ``func(t, y)`` for :func:`physode.odeint` with the symbolic
Jacobian attached as ``jacobian(t, y)`` (what :mod:`physode.ode.methods.jacobian` looks
for), so Rosenbrock steps need no automatic differentiation to linearise.

:func:`solve_to` integrates piece by piece between the model's time discontinuities
(Hairer, Nørsett & Wanner, Solving ODEs I, 2nd ed., sec. II.6): each piece is a smooth
problem, so the step-size control never has to find a jump. :func:`steady_state`
integrates until the state stops moving, ``||f(x)||_wrms <= 1`` with weights
``1 / (atol + rtol |x|)`` (the criterion of AMICI and CVODES-based codes), on a growing
horizon; its gradient is that of the discrete solve (ACA), exact for what was computed.
:func:`equilibrate` picks between it and the engine's Newton steady state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from physode.errors import SolverError
from physode.ode.solve import odeint
from physode.ode.steady import steady_state as engine_steady_state
from physode.petab.cache import GeneratedModel


class GeneratedField(nn.Module):
    """``f(t, y) = rhs(t, y, p)`` for one parameter vector ``p``, with its Jacobian
    and time derivative.

    An ``nn.Module`` whose one trainable parameter is a leaf copy of ``p`` (``self.p``):
    a solve differentiates with respect to ``self.p`` as a module parameter, which is what
    the compiled ACA reverse sweep substitutes (:mod:`physode.ode.compiled_loop`), and
    :meth:`PetabObjective.gradient` chains ``dL/dp`` back to the ``p`` the field was made
    from (kept by the objective, not here: a field holding a tensor that requires grad
    outside its parameters would be a captured tensor the solve cannot differentiate).
    """

    def __init__(self, model: GeneratedModel, p: Tensor) -> None:
        super().__init__()
        self._rhs = model.rhs
        self._jac = model.jacobian
        self._dfdt = model.time_derivative
        self.autonomous = model.autonomous
        self.p = nn.Parameter(p.detach(), requires_grad=p.requires_grad)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self._rhs(t, y, self.p)

    def jacobian(self, t: Tensor, y: Tensor) -> Tensor:
        """df/dy, generated symbolically (shape ``(n, n)``)."""
        return self._jac(t, y, self.p)

    def time_derivative(self, t: Tensor, y: Tensor) -> Tensor:
        """df/dt, generated symbolically (used by non-autonomous Rosenbrock steps)."""
        return self._dfdt(t, y, self.p)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one intra-op torch thread, restoring the count afterwards.

    A PEtab model is small (tens of states): each step is many tiny tensor operations and
    ``n x n`` LU solves, far below the size where splitting an operation over threads
    pays. With torch's default thread count the ACA backward pass of Boehm_JProteomeRes2014
    took 40x longer than with one thread (87-100 s against 2.2 s per nllh + gradient,
    measured on a 2-core machine), the threads' wake-up and synchronisation dominating.
    Parallelism across starts belongs to the executor of :meth:`PetabProblem.fit`
    (processes), not to threads inside one small solve. The count is process-wide in
    torch, so it is set around each evaluation only.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class SolverOptions:
    """Integration settings of a PEtab problem.

    ``compile``: run each solve, and its ACA reverse sweep, as compiled loops
    (:mod:`physode.ode.compiled_loop`): after a one-time compilation of about a minute
    per solve shape, a Boehm_JProteomeRes2014 forward solve takes 0.03 s instead of 0.66 s
    (rodas4, rtol 1e-6, one thread; measured on a 2-core machine). Worth it for fits, not
    for a single evaluation.
    """

    method: str = "rodas4"
    rtol: float = 1e-8
    atol: float = 1e-10
    gradient: str = "aca"
    max_steps: int = 100000
    steady_rtol: float = 1e-8
    steady_atol: float = 1e-10
    steady_horizon: float = 1e9
    compile: bool = False

    def odeint(self, field: GeneratedField, y0: Tensor, t: Tensor, grad: bool) -> Tensor:
        kwargs = dict(method=self.method, rtol=self.rtol, atol=self.atol,
                      options={"max_steps": self.max_steps}, compile=self.compile)
        if not grad:
            with torch.no_grad():
                out: Tensor = odeint(field, y0, t, **kwargs)  # type: ignore[arg-type]
            return out
        out = odeint(field, y0, t, gradient=self.gradient, params=(field.p,),
                     **kwargs)  # type: ignore[arg-type]
        return out


def solve_to(field: GeneratedField, y0: Tensor, times: Sequence[float],
             breakpoints: Sequence[float], opts: SolverOptions, grad: bool) -> Tensor:
    """States at ``times`` (sorted, >= 0) from ``y0`` at 0, restarting at breakpoints."""
    out: list[Tensor] = []
    if not times:
        return y0.new_zeros((0, y0.shape[-1]))
    end = times[-1]
    cuts = sorted({b for b in breakpoints if 0.0 < b < end})
    edges = [0.0, *cuts, end]
    y = y0
    k = 0
    for a, b in zip(edges[:-1], edges[1:]):
        while k < len(times) and times[k] <= a:  # outputs at the piece's start
            out.append(y)
            k += 1
        inner = [s for s in times[k:] if a < s < b]
        grid = torch.tensor([a, *inner, b], dtype=y0.dtype, device=y0.device)
        if b > a:
            ys = opts.odeint(field, y, grid, grad)
            out.extend(ys[1:-1])
            k += len(inner)
            y = ys[-1]
    while k < len(times):
        out.append(y)
        k += 1
    return torch.stack(out)


def steady_state(field: GeneratedField, y0: Tensor, breakpoints: Sequence[float],
                 opts: SolverOptions, grad: bool, where: str) -> Tensor:
    """The steady state reached from ``y0`` at time 0 (see the module docstring)."""
    t, y = 0.0, y0
    horizon = 10.0
    while True:
        y = solve_to_end(field, y, t, horizon, breakpoints, opts, grad)
        with torch.no_grad():
            f = field(torch.tensor(horizon, dtype=y.dtype), y)
            w = opts.steady_atol + opts.steady_rtol * y.abs()
            norm = float(torch.sqrt(torch.mean((f / w) ** 2)))
        if norm <= 1.0:
            return y
        if horizon >= opts.steady_horizon or not math.isfinite(norm):
            raise SolverError(f"{where}: no steady state reached by t = {horizon:g} "
                              f"(||dx/dt||_wrms = {norm:.3g} > 1)", horizon)
        t, horizon = horizon, horizon * 10.0


def equilibrate(field: GeneratedField, y0: Tensor, breakpoints: Sequence[float],
                opts: SolverOptions, grad: bool, where: str) -> Tensor:
    """The steady state reached from ``y0`` (pre-equilibration, ``inf`` measurements).

    An autonomous field without time switches goes to the engine's
    :func:`physode.ode.steady.steady_state`: Newton's method (integration only as a
    fallback), the gradient by the implicit function theorem, conserved totals taken from
    ``y0`` (as AMICI pre-equilibrates). On Brannmark_JBC2010 it gives the nllh and
    gradient of :func:`steady_state` below to 1e-8 relative, ~20 % faster in all
    (measured, rtol 1e-8). A field that changes with time (a switch, ``t`` in a rate)
    has its steady state only after the last change, which Newton at one fixed time cannot
    see: it integrates through the switches (:func:`steady_state`).
    """
    if field.autonomous and not breakpoints:
        try:
            return engine_steady_state(field, y0, params=(field.p,) if grad else (),
                                       tol=opts.steady_atol, method=opts.method,
                                       rtol=opts.steady_rtol, atol=opts.steady_atol,
                                       t_max=opts.steady_horizon)
        except SolverError as exc:
            raise SolverError(f"{where}: {exc}", exc.t) from None
    return steady_state(field, y0, breakpoints, opts, grad, where)


def solve_to_end(field: GeneratedField, y: Tensor, t0: float, t1: float,
                 breakpoints: Sequence[float], opts: SolverOptions, grad: bool) -> Tensor:
    """The state at ``t1`` from ``y`` at ``t0``, restarting at breakpoints in between."""
    edges = [t0, *sorted({b for b in breakpoints if t0 < b < t1}), t1]
    for a, b in zip(edges[:-1], edges[1:]):
        grid = torch.tensor([a, b], dtype=y.dtype, device=y.device)
        y = opts.odeint(field, y, grid, grad)[-1]
    return y


__all__ = ["GeneratedField", "SolverOptions", "equilibrate", "single_thread", "solve_to",
           "solve_to_end", "steady_state"]
