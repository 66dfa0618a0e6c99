"""The Jacobian of a fit's residual vector with respect to the fitted vector.

Levenberg-Marquardt and the Gauss-Newton covariance need ``J = d r / d u`` for the whole
residual vector of :mod:`physode.estimate.likelihood`. Its two sources:

- the states: the forward sensitivities ``S = dy/du`` (:mod:`physode.estimate.sensitivity`)
  from one augmented solve, started from :func:`initial_tangents` (unit directions in the
  parameters, identity in the unknown initial states, or the implicit-function-theorem
  rows of a pre-equilibrated start, :func:`rows_jacobian`);
- the residuals' own dependence on parameters they read directly: observable scales and
  offsets, noise coefficients, priors.

:func:`residual_jacobian` combines both in one forward-mode derivative
(``torch.func.jacfwd``; Griewank & Walther, *Evaluating Derivatives*, 2nd ed., 2008,
ch. 3): the states move along their sensitivities, ``y + S delta``, while the parameters
move with their coordinates, ``x(u + delta)``, and the residual vector is differentiated
at ``delta = 0``. P forward directions cost far less than the solve that produced S.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from physode.model.observables import overriding
from physode.model.system import System


def initial_tangents(system: System, params: list[nn.Parameter],
                     y0_free: dict[str, nn.Parameter], n_exp: int, dtype: torch.dtype,
                     device: torch.device) -> tuple[int, dict[str, Tensor], Tensor]:
    """``(P, tangents, s0)``: the number of directions, the unit direction of each
    parameter (``{name in system.named_parameters(): (P, *shape)}``) and the initial
    sensitivities ``(n_exp, P, state_size)`` (identity in the unknown initial states)."""
    names = {id(p): n for n, p in system.named_parameters()}
    y0_names = {id(p): n for n, p in y0_free.items()}
    P = sum(p.numel() for p in params)
    n = system.state_size
    tangents: dict[str, Tensor] = {}
    s0 = torch.zeros(n_exp, P, n, dtype=dtype, device=device)
    k = 0
    for p in params:
        m = p.numel()
        if id(p) in y0_names:
            sl = system.layout.slices[y0_names[id(p)]]
            size = sl.stop - sl.start
            batched = p.dim() == 2
            for j in range(m):
                e, i = (j // size, j % size) if batched else (None, j)
                if e is None:
                    s0[:, k + j, sl.start + i] = 1.0
                else:
                    s0[e, k + j, sl.start + i] = 1.0
        else:
            t = torch.zeros(P, m, dtype=p.dtype, device=p.device)
            t[k:k + m] = torch.eye(m, dtype=p.dtype, device=p.device)
            tangents[names[id(p)]] = t.reshape(P, *p.shape)
        k += m
    return P, tangents, s0


def rows_jacobian(y: Tensor, params: list[nn.Parameter], P: int) -> Tensor:
    """``(P, n)``: d y / d(fitted vector) of a differentiable state ``y`` (a
    pre-equilibrated start), by one reverse pass per component (n is small)."""
    out = torch.zeros(P, y.numel(), dtype=y.dtype, device=y.device)
    if not y.requires_grad:
        return out
    for i in range(y.numel()):
        grads = torch.autograd.grad(y.reshape(-1)[i], params, retain_graph=True,
                                    allow_unused=True)
        out[:, i] = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                               for p, g in zip(params, grads)])
    return out


def residual_jacobian(system: System, residuals: Callable[[list[Tensor]], Tensor],
                      states: list[Tensor], sens: list[Tensor], params: list[nn.Parameter],
                      P: int, n_residuals: int) -> Tensor:
    """d(residual vector)/d(fitted vector) (see the module docstring). ``residuals``
    maps the states of every experiment to the residual vector, reading parameters
    through ``system.param``; ``sens[e]`` is ``(n_t, P, state_size)``."""
    if P == 0:
        return torch.zeros(n_residuals, 0, dtype=torch.float64)
    specs = system.parameter_specs()
    free = dict(zip(map(id, system.free_parameters()), system.free_names()))
    slots = []
    k = 0
    for p in params:
        name = free.get(id(p))
        if name is not None and not name.startswith("y0."):
            slots.append((name, specs[name], p.detach(), k))
        k += p.numel()

    def residual_of(delta: Tensor) -> Tensor:
        over = {name: spec.to_physical(raw + delta[j:j + raw.numel()].reshape(raw.shape))
                for name, spec, raw, j in slots}
        moved = [x + torch.einsum("tpn,p->tn", s, delta) if s.numel() else x
                 for x, s in zip(states, sens)]
        with overriding(system, over):
            return residuals(moved)

    ref = states[0] if states else torch.zeros(0, dtype=torch.float64)
    delta = torch.zeros(P, dtype=ref.dtype, device=ref.device)
    out: Tensor = torch.func.jacfwd(residual_of)(delta)
    return out.detach()


__all__ = ["initial_tangents", "residual_jacobian", "rows_jacobian"]
