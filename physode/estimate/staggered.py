"""Forward sensitivities of a fit on the state's LU factors, for systems that offer them.

The general path of :meth:`~physode.estimate.problem.FitProblem.residuals_and_jacobian`
integrates the state and its ``P`` sensitivity columns as one augmented system of
``n (1 + P)`` unknowns (:mod:`physode.estimate.sensitivity`). With a stiff method that
costs a Jacobian of the augmented field and a factorisation of its ``n (1 + P)`` square
matrix per step. A system whose :meth:`sensitivity_model` gives its dynamics in closed form
(a mass-action :class:`~systems.kinetics.ReactionNetwork`) instead has its sensitivities
integrated staggered, CVODES-style (Hindmarsh et al., ACM TOMS 31:363, 2005): one Rosenbrock
step, one ``n x n`` factorisation, and every sensitivity stage solved with it
(:func:`physode.ode.sensitivity_batch.solve_sensitivities`). The experiments of a group
are the rows of one batched solve, each with its own step sizes.

It applies when all of these hold, and otherwise the general path runs unchanged:
the method is ``rodas4`` or ``rodas5p`` (the staggered solver's methods), the system
returns a model (pure mass action), the group is solved on the system itself (no condition, input or
dosing; pre-equilibrated starts are fine, their sensitivities come in as initial
values), shared times, no solver options other than ``max_steps``, and float64 on the CPU.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from physode.errors import SolverError
from physode.estimate.groups import Group
from physode.estimate.settings import SolverSettings
from physode.model.system import System
from physode.ode.sensitivity_batch import SensitivityModel, solve_sensitivities
from physode.ode.sensitivity_step import TABLEAUS

_OPTIONS = frozenset({"max_steps"})


def staggered_model(system: System, solver: SolverSettings, dtype: torch.dtype,
                    device: torch.device) -> SensitivityModel | None:
    """The system's model when the staggered path applies to its fits (module docstring)."""
    hook = getattr(system, "sensitivity_model", None)
    if (solver.method not in TABLEAUS or not callable(hook) or dtype != torch.float64
            or device.type != "cpu" or not set(solver.options or {}) <= _OPTIONS
            or not all(isinstance(v, (int, float)) for v in (solver.rtol, solver.atol))):
        return None
    model = hook()
    return model if isinstance(model, SensitivityModel) else None


def applies(group: Group, system: System) -> bool:
    """Whether ``group`` is solved on the plain system with shared times."""
    return (not group.per_sample and group.field in (None, system)
            and (group.setup is None or group.setup.trivial))


def parameter_jacobian(model: SensitivityModel, params: list[nn.Parameter],
                       P: int) -> tuple[Tensor, Tensor]:
    """``(p, dp)``: the model's parameter vector and ``dp/d(fitted vector)`` ``(R, P)``,
    one reverse pass per component (R is the number of rate constants)."""
    with torch.enable_grad():
        p = model.parameters()
        dp = torch.zeros(p.numel(), P, dtype=p.dtype, device=p.device)
        if p.requires_grad:
            flat = p.reshape(-1)
            for i in range(flat.numel()):
                grads = torch.autograd.grad(flat[i], params, retain_graph=True,
                                            allow_unused=True)
                dp[i] = torch.cat([(torch.zeros_like(q) if g is None else g).reshape(-1)
                                   for q, g in zip(params, grads)])
    return p.detach().reshape(-1), dp


def solve_group(model: SensitivityModel, group: Group, y0: Tensor, s0: Tensor, p: Tensor,
                dp: Tensor, solver: SolverSettings, compile: bool, names: str
                ) -> tuple[Tensor, Tensor, int]:
    """States ``(n_t, B, n)`` and sensitivities ``(n_t, B, P, n)`` of the group's
    experiments at its times (``y0 (B, n)``, ``s0 (B, P, n)``), and the number of
    evaluations of the vector field."""
    if group.grid.numel() == 1:  # observed only at the start: the initial state
        return y0.unsqueeze(0), s0.unsqueeze(0), 0
    B = y0.shape[0]
    options: dict[str, Any] = dict(solver.options or {})
    res = solve_sensitivities(model.field, y0, s0.transpose(1, 2), p.expand(B, -1),
                              dp.expand(B, -1, -1), group.grid, t0=float(group.grid[0]),
                              rtol=float(solver.rtol), atol=float(solver.atol),
                              max_steps=int(options.get("max_steps", 10000)),
                              compiled_loop=compile, method=solver.method)
    if not bool(res.ok.all()):
        done = res.x[..., 0].isfinite()
        last = [float(group.grid[int(d.nonzero().max())]) if bool(d.any()) else math.nan
                for d in done]
        raise SolverError(f"experiment {names}: the staggered forward-sensitivity solve "
                          f"({solver.method}) failed after t = {min(last):.6g}: step size "
                          "underflow or too many steps", min(last))
    xs = res.x.transpose(0, 1)
    ss = res.s.permute(1, 0, 3, 2)
    if group.drop_first:
        xs, ss = xs[1:], ss[1:]
    nfe = int(res.steps.sum()) * TABLEAUS[solver.method].stages
    return xs, ss, nfe


__all__ = ["applies", "parameter_jacobian", "solve_group", "staggered_model"]
