"""The continuous adjoint gradient, solved backwards in time — the baseline users ask about.

Pontryagin's adjoint as used for neural ODEs (Chen, Rubanova, Bettencourt & Duvenaud,
"Neural Ordinary Differential Equations", NeurIPS 2018, Alg. 1): the augmented state
(y, a, g) obeys y' = f, a' = -a^T df/dy, g' = -a^T df/dtheta and is integrated from t_N
back to t_0 with the forward method and tolerances. y is re-integrated backwards and so
drifts from the forward trajectory; as in torchdiffeq, y is reset to the forward value at
every output time (where the cotangent dL/dy(t_k) is added to a). The gradient is that of
the continuous problem, accurate only to the solver tolerance — unlike ACA's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from physode.ode.gradients.aca import refuse_double_backward, time_gradients
from physode.ode.loop import Config, Stats, integrate
from physode.ode.methods.norm import Tol
from physode.ode.methods.step import VectorField, time_tensor


def _aug_tol(tol: Tol, y0: torch.Tensor, n_params: int) -> Tol:
    if not isinstance(tol, torch.Tensor):
        return tol
    ty = torch.broadcast_to(tol.to(y0), y0.shape).reshape(-1)
    return torch.cat([ty, ty, ty.min().expand(n_params)])


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, func: VectorField, cfg: Config, times: list[float],
                box: dict[str, Any], y0: torch.Tensor, t: torch.Tensor,
                *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ys, stats = integrate(func, y0, times, cfg)
        box["stats"] = stats
        ctx.func, ctx.cfg, ctx.times, ctx.params, ctx.t_dtype = func, cfg, times, params, t.dtype
        ctx.save_for_backward(y0, ys)
        return ys

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        refuse_double_backward("adjoint")
        with torch.no_grad():
            return _Adjoint._backward(ctx, grad_outputs[0])

    @staticmethod
    def _backward(ctx: Any, grad_ys: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        func: VectorField = ctx.func
        cfg: Config = ctx.cfg
        times: list[float] = ctx.times
        params: tuple[torch.Tensor, ...] = ctx.params
        y0, ys = ctx.saved_tensors
        n = y0.numel()
        sizes = [p.numel() for p in params]
        n_p = sum(sizes)

        def augmented(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            y = z[:n].view_as(y0)
            a = z[n: 2 * n].view_as(y0)
            with torch.enable_grad():
                yy = y.detach().requires_grad_(True)
                f = func(t, yy)
                vjps = torch.autograd.grad(f, (yy, *params), a, allow_unused=True)
            parts = [f.reshape(-1), -vjps[0].reshape(-1) if vjps[0] is not None
                     else torch.zeros(n, dtype=z.dtype, device=z.device)]
            for v, size in zip(vjps[1:], sizes):
                parts.append(torch.zeros(size, dtype=z.dtype, device=z.device) if v is None
                             else -v.reshape(-1).to(z.dtype))
            return torch.cat(parts)

        aug_cfg = dataclasses.replace(cfg, rtol=_aug_tol(cfg.rtol, y0, n_p),
                                      atol=_aug_tol(cfg.atol, y0, n_p))
        a = grad_ys[-1].reshape(-1)
        g = torch.zeros(n_p, dtype=y0.dtype, device=y0.device)
        for k in range(len(times) - 1, 0, -1):
            z0 = torch.cat([ys[k].reshape(-1), a, g])
            zs, _ = integrate(augmented, z0, [times[k], times[k - 1]], aug_cfg)
            z = zs[-1]
            a = z[n: 2 * n] + grad_ys[k - 1].reshape(-1)
            g = z[2 * n:]
        grad_y0 = a.view_as(y0)
        g_params: list[torch.Tensor] = []
        offset = 0
        for p, size in zip(params, sizes):
            g_params.append(g[offset: offset + size].view_as(p).to(p.dtype))
            offset += size
        grad_t = None
        if ctx.needs_input_grad[5]:
            f0 = func(time_tensor(times[0], y0), y0)
            grad_t = time_gradients(func, times, ys, grad_ys, grad_y0, f0).to(ctx.t_dtype)
        return (None, None, None, None, grad_y0 if ctx.needs_input_grad[4] else None,
                grad_t, *g_params)


def adjoint_solve(
    func: VectorField, y0: torch.Tensor, t: torch.Tensor, times: list[float], cfg: Config,
    params: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, Stats]:
    """The states at ``times`` with the continuous adjoint as their backward."""
    box: dict[str, Any] = {}
    apply: Callable[..., torch.Tensor] = _Adjoint.apply
    ys = apply(func, cfg, times, box, y0, t, *params)
    stats: Stats = box["stats"]
    return ys, stats
