"""Adaptive Checkpoint Adjoint (ACA).

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

import torch

from physode.ode.loop import Checkpoint, Config, Stats, integrate
from physode.ode.methods.stepper import VectorField, time_tensor


def _accumulate(acc: list[torch.Tensor | None], grads) -> None:
    for i, g in enumerate(grads):
        if g is None:
            continue
        if acc[i] is None:
            acc[i] = g.clone()
        else:
            acc[i].add_(g)


def refuse_double_backward(gradient: str) -> None:
    """Backward with ``create_graph=True`` runs in grad mode: say clearly it is not offered."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"double backward (create_graph=True) through gradient='{gradient}' is not "
            "supported; use gradient='direct' for higher-order derivatives")


def _module_param_names(func, params) -> tuple[str, ...] | None:
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
    def forward(ctx, func, cfg: Config, times: list[float], box: dict, y0, t, *params):
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
    def backward(ctx, grad_ys):
        refuse_double_backward("aca")
        with torch.no_grad():
            return _ACA._backward(ctx, grad_ys)

    @staticmethod
    def _backward(ctx, grad_ys):
        func, cfg, times, record = ctx.func, ctx.cfg, ctx.times, ctx.record
        tab = cfg.tab
        params = ctx.params
        y0, ys = ctx.saved_tensors
        grad_ys = grad_ys.contiguous()
        a_y = torch.zeros_like(y0)
        a_f: torch.Tensor | None = None
        g_params: list[torch.Tensor | None] = [None] * len(params)
        wanted = [p for p in params]
        linear_dense = hasattr(tab, "dense_cotangents")
        names = (_module_param_names(func, params)
                 if getattr(tab, "fused_vjp", False) else None)
        n_ext = (tab.stages if tab.fsal else tab.stages + 1) if names is not None else 0
        for ck in reversed(record):
            if ck.end_out is not None:
                a_y = a_y + grad_ys[ck.end_out]
            y_cot = ext_cot = thetas = None
            if ck.interp:
                thetas = torch.tensor([(times[j] - ck.t) / ck.h for j in ck.interp],
                                      dtype=y0.dtype, device=y0.device)
                g_out = grad_ys[ck.interp[0]: ck.interp[-1] + 1]
                cots = tab.dense_cotangents(ck.h, thetas, g_out) if linear_dense else None
                if cots is not None:
                    y_cot, ext_cot = cots
            if names is not None and (ext_cot is not None or not ck.interp):
                # compiled stepper: rebuild and VJP fused into one compiled call
                if ext_cot is None:
                    ext_cot = torch.zeros((n_ext, *y0.shape), dtype=y0.dtype, device=y0.device)
                grads = tab.step_vjp(func, names, ck.t, ck.h, ck.y, ck.f, a_y,
                                     torch.zeros_like(y0) if a_f is None else a_f,
                                     ext_cot.reshape(n_ext, *y0.shape),
                                     tuple(p.detach() for p in params))
            else:
                with torch.enable_grad():
                    y = ck.y.detach().requires_grad_(True)
                    f = ck.f.detach().requires_grad_(True)
                    step = tab.step(func, ck.t, ck.h, y, f)
                    outs, gouts = [step.y1], [a_y]
                    f1 = tab.f1(func, ck.t + ck.h, step)
                    if f1 is None and (a_f is not None or ck.interp):
                        f1 = func(time_tensor(ck.t + ck.h, step.y1), step.y1)
                    if a_f is not None:
                        outs.append(f1)
                        gouts.append(a_f)
                    if ext_cot is not None:
                        ext = step.ks if tab.fsal else [*step.ks, f1]
                        for e, c in zip(ext, ext_cot):
                            outs.append(e)
                            gouts.append(c.view_as(e))
                    elif ck.interp:
                        ext = tab.extended_stages(func, ck.t, ck.h, y, step.ks, f1)
                        outs.append(tab.dense_eval(ck.h, y, ext, thetas))
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
    params: tuple[torch.Tensor, ...], box: dict | None = None,
) -> tuple[torch.Tensor, Stats]:
    box = {} if box is None else box
    ys = _ACA.apply(func, cfg, times, box, y0, t, *params)
    return ys, box["stats"]
