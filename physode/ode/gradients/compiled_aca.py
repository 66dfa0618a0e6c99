"""ACA through the compiled whole-solve loops: the same discrete gradient, no Python per step.

Zhuang et al., "Adaptive Checkpoint Adjoint Method for Gradient Estimation in Neural ODE",
ICML 2020 (arXiv:2006.02493). The forward solve and the reverse sweep are the compiled
loops of :mod:`physode.ode.compiled_loop`; this module is the autograd glue: the
checkpoints of the forward loop are kept on the autograd context, and ``backward`` runs
the reverse loops (the outputs' cotangents placed on their steps), and finally pulls the
cotangent of ``f0 = func(t0, y0)`` (the first step's FSAL input) back to ``y0`` and the
parameters — as :mod:`physode.ode.gradients.aca` does step by step.

It applies when the parameters to differentiate are exactly the trainable parameters of
an ``nn.Module`` vector field (or there are none): the loops substitute them functionally.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from physode.ode.compiled_loop import Forward, Names, loop_for, run
from physode.ode.explicit_field import explicit_form
from physode.ode.gradients.aca import (
    module_param_names,
    refuse_double_backward,
    time_gradients,
)
from physode.ode.loop import Config, Stats
from physode.ode.methods.step import VectorField


def module_names(func: VectorField, params: tuple[Tensor, ...]) -> Names | None:
    """Names under which ``params`` are exactly ``func``'s trainable parameters (``()``
    for no parameters), else None: the compiled reverse sweep cannot substitute them."""
    return () if not params else module_param_names(func, params)


def close_first_step(first: Callable[..., Tensor], y0: Tensor, ps: tuple[Tensor, ...],
                     a_y: Tensor, a_f: Tensor,
                     g: list[Tensor] | tuple[Tensor, ...]) -> tuple[Tensor, list[Tensor]]:
    """Pull the cotangent of ``f0 = first(y0, *ps)`` (the first step's derivative, which
    the reverse loops leave over) back to ``y0`` and the parameters, adding it to theirs."""
    pull = torch.func.vjp(first, y0.detach(), *ps)[1]
    gy0, *gp0 = pull(a_f)
    return a_y + gy0, [a + b for a, b in zip(g, gp0)]


class _CompiledACA(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, func: VectorField, cfg: Config, times: list[float], names: Names,
                box: dict[str, Stats], y0: Tensor, t: Tensor, *params: Tensor) -> Tensor:
        ps = tuple(p.detach() for p in params)
        fw, stats, f0 = run(func, y0.detach(), times, cfg)
        ys = fw.ys
        box["stats"] = stats
        ctx.func, ctx.cfg, ctx.times, ctx.names, ctx.params = func, cfg, times, names, ps
        ctx.fw, ctx.f0, ctx.t_dtype = fw, f0, t.dtype
        ctx.save_for_backward(y0, ys)
        return ys

    @staticmethod
    def backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        refuse_double_backward("aca")
        with torch.no_grad():
            return _CompiledACA._backward(ctx, grad_ys.contiguous())

    @staticmethod
    def _backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        y0, ys = ctx.saved_tensors
        func: VectorField = ctx.func
        names: Names = ctx.names
        ps: tuple[Tensor, ...] = ctx.params
        fw: Forward = ctx.fw
        loop = loop_for(ctx.cfg.method)
        a_y, g = loop.backward(func, names, ps, fw, grad_ys)
        a_y = a_y + grad_ys[0]
        grad_t = None
        if ctx.needs_input_grad[6]:
            grad_t = time_gradients(func, ctx.times, ys, grad_ys, a_y, ctx.f0).to(ctx.t_dtype)
        grad_y0 = a_y if ctx.needs_input_grad[5] else None
        return (None, None, None, None, None, grad_y0, grad_t, *g)


def compiled_aca_solve(func: VectorField, y0: Tensor, t: Tensor, times: list[float],
                       cfg: Config, params: tuple[Tensor, ...],
                       names: Names) -> tuple[Tensor, Stats]:
    """``gradient="aca"`` with ``compile=True``: outputs whose backward is the compiled
    reverse sweep. ``names``: from :func:`module_names` (not None)."""
    box: dict[str, Stats] = {}
    form = explicit_form(func)
    if form is not None:  # one explicit parameter vector (physode.ode.explicit_field)
        func, p = form
        names, params = ("p",), (p,)
    ys: Tensor = _CompiledACA.apply(  # type: ignore[no-untyped-call]
        func, cfg, times, names, box, y0, t, *params)
    return ys, box["stats"]


__all__ = ["close_first_step", "compiled_aca_solve", "module_names"]
