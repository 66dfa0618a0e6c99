"""ACA for per-sample solves: the eager batched loop's checkpoints, swept back per sample.

Zhuang et al., "Adaptive Checkpoint Adjoint Method for Gradient Estimation in Neural ODE",
ICML 2020 (arXiv:2006.02493), on the batched loop of :mod:`physode.ode.batch_loop`. The
forward pass runs under ``no_grad`` and keeps one :class:`BatchCheckpoint` per iteration
that accepted a step in some sample. The reverse sweep walks the iterations backwards and
rebuilds each one for the whole batch at once with autograd, from the checkpoint, by the
very step function the forward pass ran: the rows that accepted pull the cotangents of
``(y_{i+1}, f_{i+1})`` and of their dense outputs (analytically, the interpolant being
linear) back to ``(y_i, f_i)`` and the parameters; the other rows rebuild a zero step from a
finite state with zero cotangents, so they add exactly nothing, and their cotangents pass
through unchanged. Sample b's gradient is the one ACA gives for sample b solved alone, and
equals direct backpropagation to round-off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from physode.ode.batch_loop import BatchCheckpoint, dense_weights, integrate_batch
from physode.ode.batch_parts import BatchStats, BatchTimes, column, row_field
from physode.ode.gradients.aca import refuse_double_backward
from physode.ode.loop import Config
from physode.ode.methods.step import VectorField


def output_cotangents(grad_ys: Tensor, index: Tensor, valid: Tensor) -> Tensor:
    """``grad_ys[index[b, m], b]`` where valid, else 0: shape ``(B, M, *state)``."""
    B = grad_ys.shape[1]
    g = grad_ys[index, torch.arange(B, device=grad_ys.device)[:, None]]
    return torch.where(valid.reshape(*valid.shape, *([1] * (g.ndim - 2))), g, 0.0)


def batch_time_gradients(func: VectorField, bt: BatchTimes, ys: Tensor, grad_ys: Tensor,
                         a_y0: Tensor, f0: Tensor) -> Tensor:
    """dL/dt per sample, ``(n_out, B)``: ``<dL/dy_b(t_k), f(t_k, y_b(t_k))>`` for k >= 1 and
    ``-<dL/dy0_b - dL/dy_b(t_0), f(t_0, y0_b)>`` for the start (summed over the samples
    when the times are shared: shape ``(n_out,)``)."""
    field = row_field(func)
    B = ys.shape[1]
    out = torch.zeros(bt.n_out, B, dtype=ys.dtype, device=ys.device)
    with torch.no_grad():
        for k in range(1, bt.n_out):
            g = grad_ys[k]
            if bool(g.any()):
                out[k] = (g * field(column(bt.tau[k], ys[k]), ys[k])).reshape(B, -1).sum(1)
        out[0] = -((a_y0 - grad_ys[0]) * f0).reshape(B, -1).sum(1)
    return out.sum(1) if bt.shared else out


class _BatchACA(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, func: VectorField, cfg: Config, bt: BatchTimes, box: dict[str, Any],
                y0: Tensor, t: Tensor, *params: Tensor) -> Tensor:
        record: list[BatchCheckpoint] = []
        field = row_field(func)
        with torch.no_grad():
            f0 = field(column(bt.tau[0], y0), y0)
            ys, stats = integrate_batch(func, y0, bt, cfg, record=record, f0=f0)
        box["stats"] = BatchStats.of(list(stats.samples), stats.calls + 1)
        ctx.func, ctx.cfg, ctx.bt, ctx.record, ctx.f0 = func, cfg, bt, record, f0
        ctx.params, ctx.t_dtype = params, t.dtype
        ctx.save_for_backward(y0, ys)
        return ys

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[Tensor | None, ...]:
        refuse_double_backward("aca")
        with torch.no_grad():
            return _BatchACA._backward(ctx, grad_outputs[0].contiguous())

    @staticmethod
    def _backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        func: VectorField = ctx.func
        method = ctx.cfg.method
        bt: BatchTimes = ctx.bt
        params: tuple[Tensor, ...] = ctx.params
        y0, ys = ctx.saved_tensors
        field = row_field(func)
        a_y, a_f = torch.zeros_like(y0), torch.zeros_like(y0)
        g_params: list[Tensor] = [torch.zeros_like(p) for p in params]
        for ck in reversed(ctx.record):
            rec: BatchCheckpoint = ck
            okc = column(rec.accepted, y0)
            y_cot = torch.zeros_like(y0)
            stage_cot: Tensor | None = None
            if rec.outputs is not None:
                o = rec.outputs
                g = output_cotangents(grad_ys, o.index, o.valid)
                end = o.at_end.reshape(*o.at_end.shape, *([1] * (y0.ndim - 1)))
                a_y = a_y + torch.where(end, g, 0.0).sum(1)
                dense_g = torch.where(end, 0.0, g)
                y_cot = dense_g.sum(1)
                stage_cot = torch.einsum("bms,bm...->sb...", dense_weights(method, rec.h,
                                                                           o.thetas), dense_g)
            with torch.enable_grad():
                y = rec.y.detach().requires_grad_(True)
                f = rec.f.detach().requires_grad_(True)
                step = method.step(field, column(rec.t, y0), column(rec.h, y0), y, f)
                f1 = method.f1(field, column(rec.t1, y0), step)
                if f1 is None:
                    f1 = field(column(rec.t1, y0), step.y1)
                outs = [step.y1, f1]
                gouts = [torch.where(okc, a_y, 0.0), torch.where(okc, a_f, 0.0)]
                if stage_cot is not None:
                    ext = method.extended_stages(field, column(rec.t, y0), column(rec.h, y0),
                                                 y, step.ks, f1)
                    for e, c in zip(ext, stage_cot):
                        if e.requires_grad:  # a stage independent of the inputs has none
                            outs.append(e)
                            gouts.append(c)
                grads = torch.autograd.grad(outs, [y, f, *params], gouts, allow_unused=True)
            gy = grads[0] if grads[0] is not None else torch.zeros_like(y0)
            gf = grads[1] if grads[1] is not None else torch.zeros_like(y0)
            a_y = torch.where(okc, gy + y_cot, a_y)
            a_f = torch.where(okc, gf, a_f)
            for i, gp in enumerate(grads[2:]):
                if gp is not None:
                    g_params[i] = g_params[i] + gp
        with torch.enable_grad():
            y = y0.detach().requires_grad_(True)
            f0 = field(column(bt.tau[0], y0), y)
            grads = torch.autograd.grad(f0, [y, *params], a_f, allow_unused=True)
        if grads[0] is not None:
            a_y = a_y + grads[0]
        for i, gp in enumerate(grads[1:]):
            if gp is not None:
                g_params[i] = g_params[i] + gp
        a_y = a_y + grad_ys[0]
        grad_t = None
        if ctx.needs_input_grad[5]:
            grad_t = batch_time_gradients(func, bt, ys, grad_ys, a_y, ctx.f0).to(ctx.t_dtype)
        grad_y0 = a_y if ctx.needs_input_grad[4] else None
        return (None, None, None, None, grad_y0, grad_t, *g_params)


def batch_aca_solve(func: VectorField, y0: Tensor, t: Tensor, bt: BatchTimes, cfg: Config,
                    params: tuple[Tensor, ...]) -> tuple[Tensor, BatchStats]:
    """The per-sample states at the output times with the batched ACA as their backward."""
    box: dict[str, Any] = {}
    apply: Callable[..., Tensor] = _BatchACA.apply
    ys = apply(func, cfg, bt, box, y0, t, *params)
    stats: BatchStats = box["stats"]
    return ys, stats


__all__ = ["batch_aca_solve", "batch_time_gradients", "output_cotangents"]
