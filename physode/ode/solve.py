"""``odeint`` and ``solve``: the public entry points of the solver.

``odeint`` is a drop-in for ``torchdiffeq.odeint``; ``solve`` returns a :class:`Solution`
with the work counters as well.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from physode.errors import InvalidArgument
from physode.ode.compile import compiled
from physode.ode.gradients import GRADIENTS
from physode.ode.loop import Config, Stats, integrate
from physode.ode.methods import get_method
from physode.ode.methods.stepper import VectorField

_OPTION_NAMES = ("first_step", "max_step", "max_steps", "step_size", "step_to_outputs",
                 "safety", "ifactor", "dfactor", "beta")


@dataclass
class Solution:
    """Times, states (shape ``(len(ts), *y0.shape)``) and work counters of one solve."""

    ts: torch.Tensor
    ys: torch.Tensor
    stats: Stats


def _check_tolerance(name: str, value: Any, y0: torch.Tensor) -> float | torch.Tensor:
    if isinstance(value, torch.Tensor):
        if not bool((value > 0).all()):
            raise InvalidArgument(f"{name} must be positive in every component, got {value}")
        try:
            torch.broadcast_shapes(value.shape, y0.shape)
        except RuntimeError:
            raise InvalidArgument(
                f"{name} of shape {tuple(value.shape)} does not broadcast against y0 of "
                f"shape {tuple(y0.shape)}") from None
        return value.detach().to(dtype=y0.dtype, device=y0.device)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name} must be a positive number, got {value!r}") from None
    if not v > 0 or not math.isfinite(v):
        raise InvalidArgument(f"{name} must be positive and finite, got {value!r}")
    return v


def _check_times(t: Any, y0: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=torch.float64)
    if t.ndim != 1 or t.numel() == 0:
        raise InvalidArgument(f"t must be a non-empty 1-D tensor of times, got shape "
                              f"{tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    times = [float(x) for x in t.detach().cpu().tolist()]
    if not all(math.isfinite(x) for x in times):
        raise InvalidArgument("t contains a non-finite time")
    if len(times) > 1:
        d = [b - a for a, b in zip(times, times[1:])]
        if not (all(x > 0 for x in d) or all(x < 0 for x in d)):
            bad = next(i for i, x in enumerate(d) if (x <= 0) != (d[0] <= 0) or x == 0)
            raise InvalidArgument(
                f"t must be strictly increasing or strictly decreasing; t[{bad}]="
                f"{times[bad]:.17g}, t[{bad + 1}]={times[bad + 1]:.17g}")
    return t, times


def _config(method: str, rtol, atol, options: dict | None, y0: torch.Tensor) -> Config:
    tab = get_method(method)
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(_OPTION_NAMES))
    if unknown:
        raise InvalidArgument(f"unknown option(s) {unknown}; known options: "
                              f"{', '.join(_OPTION_NAMES)}")
    cfg = Config(tab=tab, rtol=_check_tolerance("rtol", rtol, y0),
                 atol=_check_tolerance("atol", atol, y0))
    for key, value in opts.items():
        if value is None:
            continue
        if key in ("first_step", "max_step", "step_size", "safety", "ifactor", "dfactor"):
            value = float(value)
            if not value > 0:
                raise InvalidArgument(f"option {key} must be positive, got {value!r}")
        if key == "max_steps":
            value = int(value)
            if value < 1:
                raise InvalidArgument(f"option max_steps must be >= 1, got {value!r}")
        setattr(cfg, key, value)
    if not tab.adaptive and cfg.step_size is not None and "step_to_outputs" not in opts:
        cfg.step_to_outputs = True
    return cfg


_warned: set[int] = set()


def _captured_tensors(func) -> list[torch.Tensor]:
    """Tensors requiring grad that ``func`` reaches outside its nn.Module parameters."""
    found: list[torch.Tensor] = []
    objs: list[Any] = []
    target = getattr(func, "__func__", func)
    for cell in getattr(target, "__closure__", None) or ():
        try:
            objs.append(cell.cell_contents)
        except ValueError:
            continue
    objs.extend(getattr(target, "__defaults__", None) or ())
    owner = getattr(func, "__self__", None)
    if isinstance(func, torch.nn.Module):
        owner = func
    if owner is not None:
        objs.extend(vars(owner).values())
    for obj in objs:
        if isinstance(obj, torch.nn.Parameter):
            continue
        if isinstance(obj, torch.Tensor) and obj.requires_grad:
            found.append(obj)
        elif isinstance(obj, (list, tuple)):
            found.extend(o for o in obj if isinstance(o, torch.Tensor) and o.requires_grad
                         and not isinstance(o, torch.nn.Parameter))
    return found


def _params(func, params) -> tuple[torch.Tensor, ...]:
    if params is None:
        if isinstance(func, torch.nn.Module):
            ps = tuple(p for p in func.parameters() if p.requires_grad)
        elif isinstance(getattr(func, "__self__", None), torch.nn.Module):
            ps = tuple(p for p in func.__self__.parameters() if p.requires_grad)
        else:
            ps = ()
    else:
        ps = tuple(params)
        for i, p in enumerate(ps):
            if not isinstance(p, torch.Tensor):
                raise InvalidArgument(f"params[{i}] is a {type(p).__name__}, not a tensor")
    ids = {id(p) for p in ps}
    missing = [x for x in _captured_tensors(func) if id(x) not in ids]
    if missing and id(func) not in _warned:
        _warned.add(id(func))
        warnings.warn(
            f"func captures {len(missing)} tensor(s) requiring grad that are not in params "
            "(nor parameters of an nn.Module func); gradient='aca' and 'adjoint' give them "
            "no gradient. Pass them as params=(...)", stacklevel=4)
    return ps


def solve(
    func: VectorField, y0: torch.Tensor, t, *, method: str = "dopri5",
    rtol: float | torch.Tensor = 1e-6, atol: float | torch.Tensor = 1e-8,
    gradient: str = "aca", params=None, options: dict | None = None,
    compile: bool = False,
) -> Solution:
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` and return a :class:`Solution`.

    ``method``: one of :data:`physode.ode.methods.METHODS` (euler, midpoint, rk4 fixed-step;
    heun_euler, bosh3, dopri5, tsit5, dopri8 adaptive). ``rtol``/``atol``: scalars or
    tensors broadcasting against ``y0``. ``gradient``: "aca" (exact discrete gradient,
    checkpoint memory), "direct" (backprop through the accepted steps) or "adjoint"
    (continuous adjoint). ``params``: tensors to differentiate besides ``y0`` and ``t``
    (default: the parameters of ``func`` when it is an ``nn.Module``). ``options``:
    first_step, max_step, max_steps (100000), step_size (fixed-step methods),
    step_to_outputs (land on every output time instead of interpolating), safety,
    ifactor, dfactor, beta (PI controller). ``compile``: run each step as one
    ``torch.compile``'d graph (forward and ACA rebuild); pays off for small systems solved
    many times (a fit), after a one-off compilation of several seconds.
    """
    if not isinstance(y0, torch.Tensor):
        raise InvalidArgument(f"y0 must be a torch.Tensor, got {type(y0).__name__}")
    if not y0.is_floating_point():
        raise InvalidArgument(f"y0 must be floating point, got dtype {y0.dtype}")
    if gradient not in GRADIENTS:
        raise InvalidArgument(f"unknown gradient {gradient!r}; choose one of "
                              f"{', '.join(GRADIENTS)}")
    t_tensor, times = _check_times(t, y0)
    cfg = _config(method, rtol, atol, options, y0)
    if gradient == "adjoint" and not getattr(cfg.tab, "supports_adjoint", True):
        raise InvalidArgument(f"gradient='adjoint' is not available with method {method!r} "
                              "(its backward solve has no position/velocity split); use "
                              "gradient='aca', which is exact")
    if compile:
        cfg.tab = compiled(cfg.tab)
    if cfg.tab.adaptive is False and cfg.step_size is None and options and options.get(
            "step_to_outputs") is False:
        raise InvalidArgument(f"method {method!r} is fixed-step: give options['step_size']")
    ps = _params(func, params) if gradient != "direct" else ()
    needs_grad = torch.is_grad_enabled() and (
        y0.requires_grad or t_tensor.requires_grad or any(p.requires_grad for p in ps)
        or gradient == "direct")
    if not needs_grad:
        with torch.no_grad():
            ys, stats = integrate(func, y0, times, cfg)
    else:
        ys, stats = GRADIENTS[gradient](func, y0, t_tensor, times, cfg, ps)
    return Solution(ts=t_tensor, ys=ys, stats=stats)


def odeint(
    func: VectorField, y0: torch.Tensor, t, *, method: str = "dopri5",
    rtol: float | torch.Tensor = 1e-6, atol: float | torch.Tensor = 1e-8,
    gradient: str = "aca", params=None, options: dict | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """Drop-in for ``torchdiffeq.odeint``: the states at times ``t``, shape
    ``(len(t), *y0.shape)``. See :func:`solve` for the arguments."""
    return solve(func, y0, t, method=method, rtol=rtol, atol=atol, gradient=gradient,
                 params=params, options=options, compile=compile).ys


__all__ = ["Solution", "odeint", "solve"]
