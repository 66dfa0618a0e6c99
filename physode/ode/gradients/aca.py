"""Adaptive Checkpoint Adjoint (ACA): the checkpointed forward solve and the exact reverse sweep.

Zhuang, Dvornek, Li, Tatikonda, Papademetris & Duncan, "Adaptive Checkpoint Adjoint Method
for Gradient Estimation in Neural ODE", ICML 2020 (arXiv:2006.02493).

Forward: the adaptive solve runs under ``no_grad`` and keeps one :class:`Checkpoint` per
accepted step — (t_i, h_i, y_i, f_i) and which outputs the step produced; rejected trials
leave nothing. Backward: for i = N-1 ... 0, the step is rebuilt with autograd from its
checkpoint by the very function the forward pass ran (the method's ``step``, plus the dense output
for output times inside the step), and a single ``autograd.grad`` pulls the cotangents of
(y_{i+1}, f_{i+1}) and of the step's outputs back to (y_i, f_i) and the parameters. The
FSAL derivative f_i is an input of step i and an output of step i-1, so its cotangent is
passed along instead of re-evaluating f(t_i, y_i) in the sweep. The result is the
gradient of the discrete solution — equal to direct backpropagation to round-off — in
O(steps x state) memory plus one step's graph.

What gets no gradient: tensors that ``func`` captures (closure, attribute of a plain
object) and that are neither parameters of ``func`` (when it is an ``nn.Module``) nor
listed in ``params=``. :func:`physode.ode.solve.odeint` warns once when it sees such a tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from physode.ode.loop import Checkpoint, Config, Stats, integrate
from physode.ode.methods.step import VectorField, time_tensor


def _accumulate(acc: list[torch.Tensor | None], grads: Sequence[torch.Tensor | None]) -> None:
    for i, g in enumerate(grads):
        if g is None:
            continue
        a = acc[i]
        if a is None:
            acc[i] = g.clone()
        else:
            a.add_(g)


def refuse_double_backward(gradient: str) -> None:
    """Backward with ``create_graph=True`` runs in grad mode: say clearly it is not offered."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"double backward (create_graph=True) through gradient='{gradient}' is not "
            "supported; use gradient='direct' for higher-order derivatives")


def module_param_names(func: VectorField,
                       params: tuple[torch.Tensor, ...]) -> tuple[str, ...] | None:
    """Names under which ``params`` are exactly ``func``'s trainable parameters (then the
    fused functional VJP applies), else None."""
    if not isinstance(func, torch.nn.Module):
        return None
    named = [(n, p) for n, p in func.named_parameters() if p.requires_grad]
    if len(named) != len(params) or any(p is not q for (_, p), q in zip(named, params)):
        return None
    return tuple(n for n, _ in named)


def time_gradients(
    func: VectorField, times: list[float], ys: torch.Tensor, grad_ys: torch.Tensor,
    grad_y0_total: torch.Tensor, f0: torch.Tensor,
) -> torch.Tensor:
    """dL/dt_k = <dL/dy(t_k), f(t_k, y(t_k))> for k >= 1, and for the start time
    dL/dt_0 = -<dL/dy0 - dL/dy(t_0), f(t_0, y0)> (moving t_0 shifts every later output)."""
    out = torch.zeros(len(times), dtype=ys.dtype, device=ys.device)
    with torch.no_grad():
        for k in range(1, len(times)):
            g = grad_ys[k]
            if bool(g.any()):
                out[k] = (g * func(time_tensor(times[k], ys[k]), ys[k])).sum()
        out[0] = -((grad_y0_total - grad_ys[0]) * f0).sum()
    return out


class _ACA(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, func: VectorField, cfg: Config, times: list[float],
                box: dict[str, Any], y0: torch.Tensor, t: torch.Tensor,
                *params: torch.Tensor) -> torch.Tensor:
        record: list[Checkpoint] = []
        with torch.no_grad():
            f0 = func(time_tensor(times[0], y0), y0)
            ys, stats = integrate(func, y0, times, cfg, record=record, f0=f0)
        stats.nfe += 1
        box["stats"] = stats
        box["record"] = record
        ctx.func, ctx.cfg, ctx.times, ctx.record, ctx.f0 = func, cfg, times, record, f0
        ctx.params = params
        ctx.t_dtype = t.dtype
        ctx.save_for_backward(y0, ys)
        return ys

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        refuse_double_backward("aca")
        with torch.no_grad():
            return _ACA._backward(ctx, grad_outputs[0])

    @staticmethod
    def _backward(ctx: Any, grad_ys: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        func: VectorField = ctx.func
        cfg: Config = ctx.cfg
        times: list[float] = ctx.times
        record: list[Checkpoint] = ctx.record
        method = cfg.method
        params: tuple[torch.Tensor, ...] = ctx.params
        y0, ys = ctx.saved_tensors
        grad_ys = grad_ys.contiguous()
        a_y = torch.zeros_like(y0)
        a_f: torch.Tensor | None = None
        g_params: list[torch.Tensor | None] = [None] * len(params)
        wanted = [p for p in params]
        names = module_param_names(func, params) if method.fused_vjp else None
        grads: Sequence[torch.Tensor | None]
        for ck in reversed(record):
            if ck.end_out is not None:
                a_y = a_y + grad_ys[ck.end_out]
            y_cot: torch.Tensor | None = None
            ext_cot: torch.Tensor | None = None
            thetas: torch.Tensor | None = None
            g_out: torch.Tensor | None = None
            if ck.interp:
                thetas = torch.tensor([(times[j] - ck.t) / ck.h for j in ck.interp],
                                      dtype=y0.dtype, device=y0.device)
                g_out = grad_ys[ck.interp[0]: ck.interp[-1] + 1]
                if method.linear_dense:  # the interpolant's VJP, analytically
                    y_cot, ext_cot = method.dense_cotangents(ck.h, thetas, g_out)
            if names is not None and (ext_cot is not None or not ck.interp):
                # compiled stepper: rebuild and VJP fused into one compiled call
                n_ext = method.n_extended
                if ext_cot is None:
                    ext_cot = torch.zeros((n_ext, *y0.shape), dtype=y0.dtype, device=y0.device)
                grads = method.step_vjp(func, names, ck.t, ck.h, ck.y, ck.f, a_y,
                                        torch.zeros_like(y0) if a_f is None else a_f,
                                        ext_cot.reshape(n_ext, *y0.shape),
                                        tuple(p.detach() for p in params))
            else:
                with torch.enable_grad():
                    y = ck.y.detach().requires_grad_(True)
                    f = ck.f.detach().requires_grad_(True)
                    step = method.step(func, ck.t, ck.h, y, f)
                    outs, gouts = [step.y1], [a_y]
                    f1 = method.f1(func, ck.t + ck.h, step)
                    if f1 is None and (a_f is not None or ck.interp):
                        f1 = func(time_tensor(ck.t + ck.h, step.y1), step.y1)
                    if a_f is not None:
                        assert f1 is not None
                        outs.append(f1)
                        gouts.append(a_f)
                    if ck.interp:
                        assert f1 is not None and thetas is not None and g_out is not None
                        ext = method.extended_stages(func, ck.t, ck.h, y, step.ks, f1)
                        if ext_cot is not None:
                            for e, c in zip(ext, ext_cot):
                                if e.requires_grad:  # a stage independent of the inputs
                                    outs.append(e)  # (a constant field) has no cotangent
                                    gouts.append(c.view_as(e))
                        else:
                            outs.append(method.dense_eval(ck.h, y, ext, thetas))
                            gouts.append(g_out)
                    grads = torch.autograd.grad(outs, [y, f, *wanted], gouts, allow_unused=True)
            a_y = grads[0] if grads[0] is not None else torch.zeros_like(y0)
            if y_cot is not None:
                a_y = a_y + y_cot.view_as(y0)
            a_f = grads[1]
            _accumulate(g_params, grads[2:])
            del grads
        if a_f is not None:
            with torch.enable_grad():
                y = y0.detach().requires_grad_(True)
                f0 = func(time_tensor(times[0], y), y)
                grads = torch.autograd.grad(f0, [y, *wanted], a_f, allow_unused=True)
            if grads[0] is not None:
                a_y = a_y + grads[0]
            _accumulate(g_params, grads[1:])
        a_y = a_y + grad_ys[0]
        grad_t = None
        if ctx.needs_input_grad[5]:
            grad_t = time_gradients(func, times, ys, grad_ys, a_y, ctx.f0).to(ctx.t_dtype)
        grad_y0 = a_y if ctx.needs_input_grad[4] else None
        return (None, None, None, None, grad_y0, grad_t, *g_params)


def aca_solve(
    func: VectorField, y0: torch.Tensor, t: torch.Tensor, times: list[float], cfg: Config,
    params: tuple[torch.Tensor, ...], box: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, Stats]:
    """The states at ``times`` with ACA as their backward (``box`` receives the stats and
    the checkpoints)."""
    box = {} if box is None else box
    apply: Callable[..., torch.Tensor] = _ACA.apply
    ys = apply(func, cfg, times, box, y0, t, *params)
    stats: Stats = box["stats"]
    return ys, stats
