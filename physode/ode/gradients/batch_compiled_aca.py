"""ACA through the compiled per-sample loops: autograd glue over :mod:`physode.ode.compiled_batch`.

Zhuang et al., "Adaptive Checkpoint Adjoint Method for Gradient Estimation in Neural ODE",
ICML 2020 (arXiv:2006.02493). The forward is the compiled per-sample solve, its
checkpoint chunks kept on the autograd context; ``backward`` runs the compiled reverse
sweeps (the outputs' cotangents placed on each sample's steps), then pulls the cotangent of
``f0 = func(t0, y0)`` back to ``y0`` and the parameters, as
:mod:`physode.ode.gradients.compiled_aca` does for one sample. It applies when the
parameters are exactly the trainable parameters of an ``nn.Module`` field (or none).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from physode.ode.batch_parts import BatchStats, BatchTimes, column, row_field
from physode.ode.compiled_batch import BatchForward, batch_loop_for, run_batch
from physode.ode.compiled_loop import Names, field_of
from physode.ode.gradients.aca import refuse_double_backward
from physode.ode.gradients.batch_aca import batch_time_gradients
from physode.ode.gradients.compiled_aca import close_first_step
from physode.ode.loop import Config
from physode.ode.methods.step import VectorField


class _CompiledBatchACA(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, func: VectorField, cfg: Config, bt: BatchTimes, names: Names,
                box: dict[str, BatchStats], y0: Tensor, t: Tensor, *params: Tensor) -> Tensor:
        fw, stats, f0 = run_batch(func, y0.detach(), bt, cfg)
        box["stats"] = stats
        ctx.func, ctx.cfg, ctx.bt, ctx.names = func, cfg, bt, names
        ctx.params = tuple(p.detach() for p in params)
        ctx.fw, ctx.f0, ctx.t_dtype = fw, f0, t.dtype
        ctx.save_for_backward(y0, fw.ys)
        return fw.ys

    @staticmethod
    def backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        refuse_double_backward("aca")
        with torch.no_grad():
            return _CompiledBatchACA._backward(ctx, grad_ys.contiguous())

    @staticmethod
    def _backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        y0, ys = ctx.saved_tensors
        func: VectorField = ctx.func
        names: Names = ctx.names
        ps: tuple[Tensor, ...] = ctx.params
        bt: BatchTimes = ctx.bt
        fw: BatchForward = ctx.fw
        a_y, a_f, g = batch_loop_for(ctx.cfg.method).backward(func, names, ps, fw, grad_ys)
        t0 = column(bt.tau[0], y0)

        def first(y_: Tensor, *ps_: Tensor) -> Tensor:
            return row_field(field_of(func, names, ps_))(t0, y_)

        a_y, g = close_first_step(first, y0, ps, a_y + grad_ys[0], a_f, g)
        grad_t = None
        if ctx.needs_input_grad[6]:
            grad_t = batch_time_gradients(func, bt, ys, grad_ys, a_y, ctx.f0).to(ctx.t_dtype)
        grad_y0 = a_y if ctx.needs_input_grad[5] else None
        return (None, None, None, None, None, grad_y0, grad_t, *g)


def compiled_batch_aca_solve(func: VectorField, y0: Tensor, t: Tensor, bt: BatchTimes,
                             cfg: Config, params: tuple[Tensor, ...],
                             names: Names) -> tuple[Tensor, BatchStats]:
    """``per_sample=True, gradient="aca", compile=True``: outputs ``(n_out, B, *state)``
    whose backward is the compiled per-sample reverse sweep."""
    box: dict[str, BatchStats] = {}
    ys: Tensor = _CompiledBatchACA.apply(  # type: ignore[no-untyped-call]
        func, cfg, bt, names, box, y0, t, *params)
    return ys, box["stats"]


__all__ = ["compiled_batch_aca_solve"]
