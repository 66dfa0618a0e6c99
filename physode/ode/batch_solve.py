"""``solve(..., per_sample=True)``: its argument checks and the choice of loop and gradient.

Called by :func:`physode.ode.solve.solve` after the checks every solve shares (state,
gradient name, method and options). Here: the batch shape of ``y0``, the times (shared
``(n,)`` or per sample ``(n, B)``), what per-sample stepping supports (adaptive explicit
Runge–Kutta methods with the default PI controller, interpolated outputs, gradients
``"aca"`` and ``"direct"``), and then the path: the compiled loops
(:mod:`physode.ode.compiled_batch`) when ``compile`` is set and they apply, else the eager
batched loop (:mod:`physode.ode.batch_loop`), with ACA
(:mod:`physode.ode.gradients.batch_aca`) or direct backpropagation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from physode.errors import InvalidArgument
from physode.ode.batch_loop import integrate_batch
from physode.ode.batch_parts import BatchStats, BatchTimes
from physode.ode.compiled_batch import integrate_batch_compiled
from physode.ode.controller import PIController
from physode.ode.gradients.batch_aca import batch_aca_solve
from physode.ode.gradients.batch_compiled_aca import compiled_batch_aca_solve
from physode.ode.loop import Config
from physode.ode.loop_choice import try_loops
from physode.ode.methods import METHODS
from physode.ode.methods.base import Method
from physode.ode.methods.step import VectorField
from physode.ode.times import check_times


def steps_per_sample(method: Method) -> bool:
    """Whether ``method`` can step each sample on its own: adaptive explicit Runge–Kutta
    (functional steps, an embedded error estimate, dense output over slopes)."""
    interp = method.interpolant
    return (method.adaptive and method.functional_step and not method.stiff
            and interp is not None and interp.by_h)


def batch_times(t: object, y0: Tensor) -> tuple[Tensor, BatchTimes]:
    """The output times as given (the tensor gradients flow to) and as :class:`BatchTimes`:
    ``t`` of shape ``(n,)`` (shared by every sample) or ``(n, B)`` (column b for sample b),
    each column strictly monotonic."""
    if isinstance(t, Tensor) and t.is_meta:
        raise InvalidArgument("t is on the meta device (a tensor without data)")
    B = y0.shape[0]
    t_tensor = t if isinstance(t, Tensor) else torch.as_tensor(t, dtype=torch.float64)
    if not t_tensor.is_floating_point():
        t_tensor = t_tensor.to(torch.float64)
    if t_tensor.ndim == 1:
        check_times(t_tensor, decreasing=True, name="t")
        tau = t_tensor.detach().to(y0).unsqueeze(1).expand(-1, B).contiguous()
        return t_tensor, BatchTimes(tau, shared=True)
    if t_tensor.ndim != 2 or t_tensor.shape[1] != B:
        raise InvalidArgument(
            f"per_sample=True: t must have shape (n,) (times shared by the samples) or "
            f"(n, {B}) (column b for sample b of y0's {B}), got {tuple(t_tensor.shape)}")
    for b in range(B):
        check_times(t_tensor[:, b], decreasing=True, name=f"t[:, {b}]")
    return t_tensor, BatchTimes(t_tensor.detach().to(y0).contiguous(), shared=False)


def check_batch_config(cfg: Config, gradient: str, y0: Tensor) -> None:
    """:class:`InvalidArgument` when ``per_sample=True`` does not support the set-up."""
    if y0.ndim < 1 or y0.shape[0] < 1:
        raise InvalidArgument(f"per_sample=True: y0 must have shape (B, *state) with B >= 1, "
                              f"got {tuple(y0.shape)}")
    if not steps_per_sample(cfg.method) or cfg.step_size is not None:
        names = ", ".join(n for n, m in METHODS.items() if steps_per_sample(m))
        raise InvalidArgument(f"per_sample=True needs an adaptive explicit Runge-Kutta method "
                              f"({names}), got {cfg.method.name!r}"
                              + (" with a fixed step_size" if cfg.step_size is not None else ""))
    if type(cfg.controller) is not PIController:
        raise InvalidArgument("per_sample=True steps with the default PI controller (give "
                              "safety, ifactor, dfactor, beta as options), not options"
                              f"['controller'] = {type(cfg.controller).__name__}")
    if cfg.step_to_outputs:
        raise InvalidArgument("per_sample=True interpolates the outputs; option "
                              "step_to_outputs is not supported with it")
    if gradient == "adjoint":
        raise InvalidArgument("per_sample=True supports gradient='aca' (exact) and 'direct', "
                              "not 'adjoint'")


_NOT_LOOPABLE: set[int] = set()


def _compiled(func: VectorField, y0: Tensor, t: Tensor, bt: BatchTimes, cfg: Config,
              gradient: str, ps: tuple[Tensor, ...],
              needs_grad: bool) -> tuple[Tensor, BatchStats] | None:
    """The compiled batched loops when they apply (forward only, or ACA with the parameters
    of an ``nn.Module`` field), else None; a field the compiler cannot handle falls back to
    the eager batched loop once, with a warning."""
    return try_loops(
        func, cfg, bt.n_out, gradient, ps, needs_grad, _NOT_LOOPABLE,
        lambda: integrate_batch_compiled(func, y0, bt, cfg),
        lambda names: compiled_batch_aca_solve(func, y0, t, bt, cfg, ps, names),
        f"the per-sample {cfg.method.name} solve", "solving it eagerly instead")


def solve_batch(func: VectorField, y0: Tensor, t: object, cfg: Config, gradient: str,
                ps: tuple[Tensor, ...], compile: bool) -> tuple[Tensor, Tensor, BatchStats]:
    """``(t, ys, stats)`` of a per-sample solve: ``ys`` of shape ``(n, B, *state)``."""
    check_batch_config(cfg, gradient, y0)
    t_tensor, bt = batch_times(t, y0)
    needs_grad = torch.is_grad_enabled() and (
        y0.requires_grad or t_tensor.requires_grad or any(p.requires_grad for p in ps)
        or gradient == "direct")
    if compile:
        whole = _compiled(func, y0, t_tensor, bt, cfg, gradient, ps, needs_grad)
        if whole is not None:
            return t_tensor, whole[0], whole[1]
    if not needs_grad:
        with torch.no_grad():
            ys, stats = integrate_batch(func, y0, bt, cfg)
    elif gradient == "aca":
        ys, stats = batch_aca_solve(func, y0, t_tensor, bt, cfg, ps)
    else:
        ys, stats = integrate_batch(func, y0, bt, cfg)
    return t_tensor, ys, stats


__all__ = ["batch_times", "check_batch_config", "solve_batch", "steps_per_sample"]
