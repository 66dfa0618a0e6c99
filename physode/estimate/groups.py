"""Which experiments of a fit are solved together (:class:`Group`), and how.

Experiments with the same start time, observation times and setup (condition, inputs,
dosing) share one solve in the batch dimension: one step-size sequence for all. Where the
method can step every sample on its own (adaptive explicit Runge–Kutta,
:func:`physode.ode.batch_solve.steps_per_sample`), groups that differ only in their
times — the same number of times and the same trivial setup — are merged further into
one per-sample solve (``solve(..., per_sample=True)`` with a column of times per
experiment): each experiment keeps its own steps, so the result equals separate solves,
and a fit of many experiments pays the per-operation overhead of eager PyTorch once per
step rather than once per experiment (1000 pendulums observed at their own times: one
batched solve instead of 1000).

Per-sample solving calls the vector field with a time per row (``t`` of shape ``(B,)``);
a field that does not act row-wise on it (a forcing ``sin(w t)`` multiplied into a
vector-valued state, say) would mix rows, so :func:`rowwise` checks the field once on
the actual initial states and keeps such experiments in separate solves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from physode.data.observations import Experiment, Observations
from physode.estimate.conditions import ConditionedField
from physode.estimate.protocol import ExperimentSetup
from physode.model.system import System
from physode.ode.batch_solve import steps_per_sample
from physode.ode.methods import METHODS


@dataclass
class Group:
    """Experiments solved together. ``grid``: ``(n,)`` shared times, or ``(n, B)`` one
    column per experiment when ``per_sample`` (each experiment its own steps)."""

    exps: list[int]
    grid: Tensor
    drop_first: bool
    field: nn.Module | None = None
    setup: ExperimentSetup | None = None
    per_sample: bool = False


def start_time(exp: Experiment) -> float:
    """The experiment's t0 (its first time when not given)."""
    return float(exp.t[0]) if exp.t0 is None else float(exp.t0)


def build_groups(system: System, obs: Observations, setups: list[ExperimentSetup],
                 method: str, dtype: torch.dtype, device: torch.device,
                 y0: Tensor | None = None) -> tuple[list[Group], list[nn.Module]]:
    """``(groups, field of each experiment)``; ``y0`` (``(n_exp, size)``, the initial
    states) enables the per-sample merge (see the module docstring)."""
    keyed: dict[tuple[Any, ...], list[int]] = {}
    for e, exp in enumerate(obs.experiments):
        key = (start_time(exp), tuple(exp.t.tolist()), setups[e].key)
        keyed.setdefault(key, []).append(e)
    groups: list[Group] = []
    fields: list[nn.Module] = [system] * len(obs.experiments)
    for (t0, times, _), exps in keyed.items():
        grid = list(times)
        drop = t0 < grid[0]
        if drop:
            grid = [t0, *grid]
        setup = setups[exps[0]]
        func: nn.Module = system if setup.trivial else ConditionedField(system, setup)
        for e in exps:
            fields[e] = func
        groups.append(Group(exps, torch.tensor(grid, dtype=dtype, device=device), drop, func,
                            setup))
    method_ = METHODS.get(method)
    if y0 is None or method_ is None or not steps_per_sample(method_):
        return groups, fields
    return _merge_per_sample(groups, system, y0), fields


def _merge_per_sample(groups: list[Group], system: System, y0: Tensor) -> list[Group]:
    """Groups of the system itself with as many times (> 1) merged into per-sample ones."""
    by_len: dict[tuple[int, bool], list[Group]] = {}
    rest: list[Group] = []
    for g in groups:
        if g.field is system and g.grid.numel() > 1 and _plain(g):
            by_len.setdefault((g.grid.numel(), g.drop_first), []).append(g)
        else:
            rest.append(g)
    merged: list[Group] = []
    for (_, drop), gs in by_len.items():
        if len(gs) == 1:
            merged += gs
            continue
        exps = [e for g in gs for e in g.exps]
        grid = torch.stack([g.grid for g in gs for _ in g.exps], dim=1)
        # probe at a distinct time per row, between each one's first and last time
        frac = torch.arange(1, len(exps) + 1, dtype=grid.dtype) / (len(exps) + 1)
        probe = grid[0] + (grid[-1] - grid[0]) * frac.to(grid.device)
        if not rowwise(system, probe, y0[exps].to(grid)):
            merged += gs
            continue
        merged.append(Group(exps, grid, drop, system, None, per_sample=True))
    return merged + rest


def _plain(group: Group) -> bool:
    """A solve without stops or dosing events (what per-sample solving supports)."""
    if group.setup is None:
        return True
    span = (float(group.grid[0]), float(group.grid[-1]))
    options, events = group.setup.solve_options(None, span)
    return not options and not events


def rowwise(field: nn.Module, t: Tensor, y: Tensor) -> bool:
    """Whether ``field(t, y)`` with a time per row (``t`` of shape ``(B,)``) equals the
    rows evaluated one at a time: what per-sample solving needs of a vector field."""
    try:
        with torch.no_grad():
            together = field(t, y)
            alone = torch.cat([field(t[b], y[b:b + 1]) for b in range(len(y))])
    except Exception:  # noqa: BLE001 - a field that fails on batched times: not row-wise
        return False
    return together.shape == alone.shape and bool(
        torch.allclose(together, alone, rtol=1e-12, atol=0.0, equal_nan=True))


__all__ = ["Group", "build_groups", "rowwise", "start_time"]
