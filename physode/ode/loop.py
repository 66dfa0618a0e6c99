"""The integration loop shared by every gradient mode, its settings, checkpoints and work counters.

``integrate`` advances one accepted step at a time with the method's ``step``, asks the
step-size controller (outside any graph) whether to accept, reuses the accepted trial and the FSAL
derivative, and fills the requested output times from the step's dense output — all
outputs inside one step in one tensor operation. When it is given a ``record`` list, it
appends one :class:`Checkpoint` per accepted step: all the ACA reverse sweep needs to
rebuild that step. Rejected trials leave nothing behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from physode.errors import (
    InvalidArgument,
    MaxStepsExceeded,
    NonFiniteState,
    SolverError,
    StepSizeUnderflow,
)
from physode.ode.controller import PIController, StepSizeController, initial_step
from physode.ode.methods.base import Method
from physode.ode.methods.norm import Tol
from physode.ode.methods.step import Step, VectorField, time_tensor
from physode.ode.stiffness import stiffness_hint


@dataclass
class Stats:
    """Work counters of one solve: function evaluations, steps tried, accepted, rejected."""

    nfe: int = 0
    steps: int = 0
    accepted: int = 0
    rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"nfe": self.nfe, "steps": self.steps, "accepted": self.accepted,
                "rejected": self.rejected}


@dataclass
class Config:
    """Solver settings after validation (see :func:`physode.ode.solve.odeint` for the options)."""

    method: Method
    rtol: Tol = 1e-6
    atol: Tol = 1e-8
    first_step: float | None = None
    max_step: float = math.inf
    max_steps: int = 100_000
    step_size: float | None = None
    step_to_outputs: bool = False
    controller: StepSizeController = field(default_factory=PIController)


@dataclass
class Checkpoint:
    """One accepted step: start time, size, state and derivative at its start, and the
    output indices it produced (interpolated ones and, if the step ends on an output time,
    that one)."""

    t: float
    h: float
    y: torch.Tensor
    f: torch.Tensor
    interp: list[int] = field(default_factory=list)
    end_out: int | None = None


def check_derivative(f: object, y: torch.Tensor, t: float) -> torch.Tensor:
    """``f = func(t, y)`` if it is a tensor shaped like ``y``, else :class:`InvalidArgument`."""
    if not isinstance(f, torch.Tensor):
        raise InvalidArgument(f"func(t, y) must return a tensor shaped like y "
                              f"{tuple(y.shape)}, but returned {type(f).__name__} at t={t:.17g}")
    if f.shape != y.shape:
        raise InvalidArgument(f"func(t, y) returned shape {tuple(f.shape)} at t={t:.17g}, but "
                              f"y has shape {tuple(y.shape)}: dy/dt must be shaped like y")
    return f


def _fixed_grid(times: list[float], cfg: Config) -> list[float]:
    """Step grid for fixed-step methods: uniform ``step_size`` from t0, plus every output
    time (unless ``step_to_outputs`` is off), so outputs are exact step ends. A grid of
    more than ``max_steps`` steps is refused before it is built."""
    t0, t1 = times[0], times[-1]
    if cfg.step_size is None:
        return list(times)
    h = abs(cfg.step_size)
    steps = math.floor(abs(t1 - t0) / h + 1e-9)
    if steps > cfg.max_steps:
        raise MaxStepsExceeded(t0, cfg.max_steps, hint=(
            f"the fixed step size {h:.3g} needs {steps:.3g} steps from t={t0:.17g} to "
            f"t={t1:.17g}; give a larger options['step_size']"))
    n = int(steps)
    direction = 1.0 if t1 >= t0 else -1.0
    pts = [t0 + direction * h * i for i in range(n + 1)]
    pts.append(t1)
    if cfg.step_to_outputs:
        pts.extend(times)
    arr = np.unique(np.asarray(pts))
    arr = arr if direction > 0 else arr[::-1]
    tol = 1e-9 * h
    grid = [float(arr[0])]
    for x in arr[1:]:
        if abs(x - grid[-1]) > tol:
            grid.append(float(x))
    # outputs and the end must stay exact grid points: snap near-duplicates onto them
    exact = set(times) if cfg.step_to_outputs else {t1}
    for i, g in enumerate(grid):
        for x in exact:
            if abs(g - x) <= tol:
                grid[i] = x
    return grid


def _check_step(h: float, t: float) -> None:
    """A NaN, infinite or zero step size stops the solve at once (it would never advance
    nor underflow)."""
    if not (math.isfinite(h) and h != 0.0):
        raise SolverError(f"the step-size controller proposed h={h!r} at t={t:.17g}; a step "
                          "size must be finite and non-zero", t)


Watch = Callable[[float, float, torch.Tensor, torch.Tensor, Step, torch.Tensor], bool]
"""``watch(t, h, y, f, step, f1) -> stop``: called after each accepted step from ``(t, y)``
(``f = func(t, y)``) of size ``h`` to ``step.y1`` (``f1`` its derivative); True stops the
solve after that step (the event search of :mod:`physode.ode.events`)."""


def integrate(
    func: VectorField, y0: torch.Tensor, times: list[float], cfg: Config,
    record: list[Checkpoint] | None = None, f0: torch.Tensor | None = None,
    watch: Watch | None = None,
) -> tuple[torch.Tensor, Stats]:
    """Solve from ``times[0]`` through every time in ``times`` (strictly monotonic).

    Returns the states at ``times`` stacked, shape ``(len(times), *y0.shape)``, and the
    work counters. Runs with whatever grad mode the caller set; the controller never
    records a graph. ``watch``: see :data:`Watch`; when it stops the solve, only the
    outputs reached so far are returned.
    """
    method = cfg.method
    stats = Stats()
    n_out = len(times)
    chunks: list[torch.Tensor] = [y0.unsqueeze(0)]
    if n_out == 1:
        return torch.cat(chunks), stats
    t = times[0]
    direction = 1.0 if times[-1] > t else -1.0
    y = y0
    if f0 is None:
        f = check_derivative(func(time_tensor(t, y0), y0), y0, t)
        stats.nfe += 1
    else:
        f = check_derivative(f0, y0, t)
    if not bool(torch.isfinite(f.detach()).all() & torch.isfinite(y0.detach()).all()):
        raise NonFiniteState(t, "initial state or derivative")

    adaptive = method.adaptive and cfg.step_size is None
    grid: list[float] = []
    gi = 1
    h = 0.0
    if adaptive:
        ctrl = cfg.controller.init(method)
        span = abs(times[-1] - t)
        if cfg.first_step is not None:
            h = direction * min(abs(cfg.first_step), span)
        else:
            h, extra = initial_step(func, method, t, y, f, direction, cfg.rtol, cfg.atol,
                                    span)
            stats.nfe += extra
        h = math.copysign(min(abs(h), cfg.max_step), direction)
        _check_step(h, t)
    else:
        grid = _fixed_grid(times, cfg)
    eps = torch.finfo(y0.dtype).eps
    k = 1  # next output index
    last_nonfinite = False
    while k < n_out:
        if stats.steps >= cfg.max_steps:
            raise MaxStepsExceeded(t, cfg.max_steps, hint=stiffness_hint(
                func, method, t, y, h if adaptive else None))
        if adaptive:
            target = times[k] if cfg.step_to_outputs else times[-1]
            # land exactly on the target when the step would reach (or nearly reach) it
            if direction * (t + 1.01 * h - target) >= 0:
                h_try, t_new = target - t, target
            else:
                h_try, t_new = h, t + h
            if abs(h_try) <= 10 * eps * max(abs(t), 1e-300):
                if last_nonfinite:
                    raise NonFiniteState(t)
                raise StepSizeUnderflow(t, h_try,
                                        hint=stiffness_hint(func, method, t, y, h_try))
        else:
            t_new = grid[gi]
            h_try = t_new - t
        stats.nfe += method.nfe_per_step
        stats.steps += 1
        if adaptive:
            step, ratio = method.step_and_error(func, t, h_try, y, f, cfg.rtol, cfg.atol)
            accept, h_next = ctrl.adapt(h_try, ratio)
            last_nonfinite = not math.isfinite(ratio)
            h_next = math.copysign(min(abs(h_next), cfg.max_step), direction)
            _check_step(h_next, t)
            if not accept:
                stats.rejected += 1
                h = h_next
                continue
            h = h_next
        else:
            step = method.step(func, t, h_try, y, f)
            gi += 1
            if not bool(torch.isfinite(step.y1.detach()).all()):
                raise NonFiniteState(t_new)
        stats.accepted += 1
        y1 = step.y1
        f1 = method.f1(func, t_new, step)
        if f1 is None:
            f1 = func(time_tensor(t_new, y1), y1)
            stats.nfe += 1

        # outputs inside (t, t_new]: interpolate the interior ones, the end one is y1
        k_end = k
        while k_end < n_out and direction * (times[k_end] - t_new) <= 0:
            k_end += 1
        end_out = None
        interp: list[int] = []
        if k_end > k:
            if times[k_end - 1] == t_new:
                end_out = k_end - 1
                interp = list(range(k, k_end - 1))
            else:
                interp = list(range(k, k_end))
            if interp:
                ext = method.extended_stages(func, t, h_try, y, step.ks, f1)
                stats.nfe += method.nfe_dense
                thetas = torch.tensor([(times[j] - t) / h_try for j in interp],
                                      dtype=y.dtype, device=y.device)
                chunks.append(method.dense_eval(h_try, y, ext, thetas))
            if end_out is not None:
                chunks.append(y1.unsqueeze(0))
            k = k_end
        if record is not None:
            record.append(Checkpoint(t, h_try, y, f, interp, end_out))
        if watch is not None and watch(t, h_try, y, f, step, f1):
            break
        t, y, f = t_new, y1, f1
    return torch.cat(chunks), stats
