"""The fitted trajectories on a fine time grid, for plots and the labelled output.

Each experiment gets ``n`` evenly spaced times from its t0 to its last observation. The
experiments that share a solve in the fit share it here too: per-sample groups
(:mod:`physode.estimate.groups`) in one per-sample solve, and groups on the staggered path
(:mod:`physode.estimate.staggered`) in one staggered solve on their common fine grid.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from physode.data.observations import Observations
from physode.estimate.groups import Group, start_time
from physode.estimate.protocol import ExperimentSetup
from physode.estimate.staggered import applies
from physode.model.system import System
from physode.ode.sensitivity_batch import SensitivityModel


class Solves(Protocol):
    """What :func:`fine_trajectories` needs of a fit problem
    (:class:`~physode.estimate.problem.FitProblem`)."""

    obs: Observations
    system: System
    groups: list[Group]
    setups: list[ExperimentSetup]
    fields: list[nn.Module]
    staggered: SensitivityModel | None
    dtype: torch.dtype
    device: torch.device

    def initial_states(self) -> Tensor: ...

    def solve_states(self, func: nn.Module, y0: Tensor, group: Group,
                     gradient: str | None) -> Tensor: ...

    def plain_states(self, g: Group, y0: Tensor) -> Tensor: ...


def fine_trajectories(problem: Solves, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Fitted states on ``n`` evenly spaced times from each experiment's t0 to its last
    observation: ``(times, states)``, one ``(n,)`` and ``(n, state_size)`` each. The
    experiments of per-sample groups are solved together here too."""
    y0 = problem.initial_states().detach()
    ts: list[np.ndarray] = []
    for exp in problem.obs.experiments:
        t0, t_end = start_time(exp), float(exp.t[-1])
        ts.append(np.linspace(t0, t_end, max(int(n), 2)) if t_end != t0
                  else np.array([t0]))
    states: list[np.ndarray | None] = [None] * len(ts)
    together = [e for g in problem.groups if g.per_sample for e in g.exps]
    with torch.no_grad():
        if together:
            grid = torch.as_tensor(np.stack([ts[e] for e in together], 1),
                                   dtype=problem.dtype, device=problem.device)
            ys = problem.solve_states(problem.system, y0[together],
                                      Group(together, grid, False, per_sample=True), None)
            for b, e in enumerate(together):
                states[e] = ys[:, b].cpu().numpy()
        for g in problem.groups:  # experiments that share times share a fine grid
            if problem.staggered is not None and applies(g, problem.system):
                fine = torch.as_tensor(ts[g.exps[0]], dtype=problem.dtype,
                                       device=problem.device)
                ys = problem.plain_states(Group(g.exps, fine, False, problem.system,
                                                g.setup), y0[g.exps])
                for b, e in enumerate(g.exps):
                    states[e] = ys[:, b].cpu().numpy()
        for e in range(len(ts)):
            if states[e] is not None:
                continue
            grid1 = Group([e], torch.as_tensor(ts[e], dtype=problem.dtype,
                                               device=problem.device),
                          False, setup=problem.setups[e])
            states[e] = problem.solve_states(problem.fields[e], y0[e:e + 1], grid1,
                                             None)[:, 0].cpu().numpy()
    return ts, [s for s in states if s is not None]
