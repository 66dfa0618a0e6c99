"""``odeint`` and ``solve``, the public entry points, and the one validation of their arguments.

``odeint`` is a drop-in for ``torchdiffeq.odeint``; ``solve`` returns a :class:`Solution`
with the work counters as well. Every argument is checked here, before any work, and a
malformed one is an :class:`~physode.errors.InvalidArgument` naming it: times through
:func:`physode.ode.times.check_times`, method and gradient names through
:func:`~physode.ode.methods.get_method` and :func:`~physode.ode.gradients.check_gradient`,
options by :func:`make_config`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt
import torch

from physode.errors import InvalidArgument
from physode.ode.batch_solve import solve_batch
from physode.ode.compile import compiled
from physode.ode.compiled_loop import integrate_compiled
from physode.ode.controller import PIController, StepSizeController
from physode.ode.events import Event, EventRecord
from physode.ode.explicit_field import explicit_form
from physode.ode.gradients import GRADIENTS, check_gradient
from physode.ode.gradients.compiled_aca import compiled_aca_solve
from physode.ode.loop import Config, Stats, integrate
from physode.ode.loop_choice import try_loops
from physode.ode.methods import get_method
from physode.ode.methods.step import VectorField
from physode.ode.segments import SEGMENT_OPTIONS, Plan, plan_segments, solve_segments
from physode.ode.times import check_times

Times = torch.Tensor | npt.ArrayLike
"""Output times: a 1-D tensor, array or sequence of numbers."""

_OPTION_NAMES = ("first_step", "max_step", "max_steps", "step_size", "step_to_outputs",
                 "controller", "safety", "ifactor", "dfactor", "beta", *SEGMENT_OPTIONS)
_PI_OPTIONS = ("safety", "ifactor", "dfactor", "beta")
_DTYPES = (torch.float32, torch.float64)


@dataclass
class Solution:
    """Times, states (shape ``(len(ts), *y0.shape)``) and work counters of one solve, and
    the events that fired (:class:`~physode.ode.events.EventRecord`, in order)."""

    ts: torch.Tensor
    ys: torch.Tensor
    stats: Stats
    events: list[EventRecord] = field(default_factory=list)


def check_state(y0: object) -> torch.Tensor:
    """``y0`` if it is a float32/float64 tensor holding data, else :class:`InvalidArgument`.

    Half precision (float16, bfloat16) is refused: its 3-4 significant digits cannot
    resolve the error control (the default ``atol=1e-8`` is below float16's smallest
    number, the error norm becomes NaN), so convert with ``y0.float()``.
    """
    if not isinstance(y0, torch.Tensor):
        raise InvalidArgument(f"y0 must be a torch.Tensor, got {type(y0).__name__}")
    if not y0.is_floating_point():
        raise InvalidArgument(f"y0 must be floating point, got dtype {y0.dtype}")
    if y0.dtype not in _DTYPES:
        raise InvalidArgument(
            f"y0 has dtype {y0.dtype}: the step-size control needs float32 or float64 "
            "(half precision cannot resolve the tolerances); convert it, e.g. y0.float()")
    if y0.is_meta:
        raise InvalidArgument("y0 is on the meta device (a tensor without data); give a "
                              "state on the CPU or an accelerator")
    return y0


def _broadcastable(a: torch.Size, b: torch.Size) -> bool:
    """Whether shapes ``a`` and ``b`` broadcast against each other (numpy's rule)."""
    return all(x == y or x == 1 or y == 1 for x, y in zip(reversed(a), reversed(b)))


def _check_tolerance(name: str, value: object, y0: torch.Tensor) -> float | torch.Tensor:
    tiny = torch.finfo(y0.dtype).tiny
    if isinstance(value, torch.Tensor):
        if value.is_meta or value.is_complex():
            raise InvalidArgument(f"{name} must be a real tensor holding data")
        if not bool((value > 0).all()) or not bool(torch.isfinite(value).all()):
            raise InvalidArgument(f"{name} must be positive and finite in every component, "
                                  f"got {value}")
        if not _broadcastable(value.shape, y0.shape):
            raise InvalidArgument(
                f"{name} of shape {tuple(value.shape)} does not broadcast against y0 of "
                f"shape {tuple(y0.shape)}")
        out = value.detach().to(dtype=y0.dtype, device=y0.device)
        if not bool((out >= tiny).all()):
            raise InvalidArgument(f"{name} has components below the smallest {y0.dtype} "
                                  f"number ({tiny:.3g}): they would round to 0")
        return out
    if isinstance(value, bool):
        raise InvalidArgument(f"{name} must be a positive number, got {value!r}")
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name} must be a positive number, got {value!r}") from None
    if not v > 0 or not math.isfinite(v):
        raise InvalidArgument(f"{name} must be positive and finite, got {value!r}")
    if v < tiny:
        raise InvalidArgument(f"{name}={value!r} is below the smallest {y0.dtype} number "
                              f"({tiny:.3g}): it would round to 0")
    return v


def _times(t: object) -> tuple[torch.Tensor, list[float]]:
    """``t`` as a float tensor (the one gradients flow to) and as validated floats."""
    if isinstance(t, torch.Tensor) and t.is_meta:
        raise InvalidArgument("t is on the meta device (a tensor without data)")
    times = check_times(t, decreasing=True, name="t").tolist()
    if isinstance(t, torch.Tensor):
        t_tensor = t if t.is_floating_point() else t.to(torch.float64)
    else:
        t_tensor = torch.tensor(times, dtype=torch.float64)
    return t_tensor, times


def _positive(key: str, value: object, *, allow_inf: bool = False) -> float:
    if isinstance(value, bool):
        raise InvalidArgument(f"option {key} must be a positive number, got {value!r}")
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgument(f"option {key} must be a positive number, got {value!r}") from None
    if not v > 0 or (math.isinf(v) and not allow_inf) or math.isnan(v):
        what = "positive" if allow_inf else "positive and finite"
        raise InvalidArgument(f"option {key} must be {what}, got {value!r}")
    return v


def _max_steps(value: object) -> int:
    if isinstance(value, bool):
        raise InvalidArgument(f"option max_steps must be an integer >= 1, got {value!r}")
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"option max_steps must be an integer >= 1, got {value!r}") from None
    if not math.isfinite(v) or v < 1 or v != int(v):
        raise InvalidArgument(f"option max_steps must be a finite integer >= 1, got {value!r}")
    return int(v)


def make_config(method: object, rtol: object, atol: object,
                options: Mapping[str, object] | None, y0: torch.Tensor) -> Config:
    """Validated solver settings (see :func:`solve` for the options)."""
    m = get_method(method)
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise InvalidArgument(f"options must be a dict of option names to values, got "
                              f"{type(options).__name__}")
    unknown = sorted(str(k) for k in options if k not in _OPTION_NAMES)
    if unknown:
        raise InvalidArgument(f"unknown option(s) {unknown}; known options: "
                              f"{', '.join(_OPTION_NAMES)}")
    opts = {k: v for k, v in options.items() if v is not None}
    cfg = Config(method=m, rtol=_check_tolerance("rtol", rtol, y0),
                 atol=_check_tolerance("atol", atol, y0))
    if "first_step" in opts:
        cfg.first_step = _positive("first_step", opts["first_step"])
    if "step_size" in opts:
        cfg.step_size = _positive("step_size", opts["step_size"])
    if "max_step" in opts:
        cfg.max_step = _positive("max_step", opts["max_step"], allow_inf=True)
    if "max_steps" in opts:
        cfg.max_steps = _max_steps(opts["max_steps"])
    if "step_to_outputs" in opts:
        value = opts["step_to_outputs"]
        if not isinstance(value, bool):
            raise InvalidArgument(f"option step_to_outputs must be True or False, got "
                                  f"{value!r}")
        cfg.step_to_outputs = value
    pi = {k: opts[k] for k in _PI_OPTIONS if k in opts}
    if "controller" in opts:
        controller = opts["controller"]
        if not isinstance(controller, StepSizeController):
            raise InvalidArgument(
                f"option controller must be a physode.ode.controller.StepSizeController "
                f"(e.g. PIController(...)), got {type(controller).__name__}")
        if pi:
            raise InvalidArgument(f"options {sorted(pi)} configure the default PI controller; "
                                  "with options['controller'] give them to that controller")
        cfg.controller = controller
    elif pi:
        try:
            cfg.controller = PIController(**pi)  # type: ignore[arg-type]
        except InvalidArgument as exc:
            raise InvalidArgument(f"option {exc}") from None
    if m.adaptive and cfg.step_size is None:
        cfg.controller.init(m)  # a controller that cannot drive this method says so now
    if not m.adaptive and cfg.step_size is not None and "step_to_outputs" not in opts:
        cfg.step_to_outputs = True
    if not m.adaptive and cfg.step_size is None and opts.get("step_to_outputs") is False:
        raise InvalidArgument(f"method {m.name!r} is fixed-step: give options['step_size']")
    return cfg


_warned: set[int] = set()


def _captured_tensors(func: object) -> list[torch.Tensor]:
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


def _params(func: object, params: Iterable[torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
    ps: tuple[torch.Tensor, ...]
    if params is None:
        if isinstance(func, torch.nn.Module):
            ps = tuple(p for p in func.parameters() if p.requires_grad)
        elif isinstance(owner := getattr(func, "__self__", None), torch.nn.Module):
            ps = tuple(p for p in owner.parameters() if p.requires_grad)
        else:
            ps = ()
    else:
        if isinstance(params, torch.Tensor):
            raise InvalidArgument("params must be a sequence of tensors, got one tensor; "
                                  "write params=(x,)")
        try:
            ps = tuple(params)
        except TypeError:
            raise InvalidArgument(f"params must be a sequence of tensors, got "
                                  f"{type(params).__name__}") from None
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


_NOT_LOOPABLE: set[int] = set()


def _loop_field(func: VectorField) -> VectorField:
    """The field a compiled forward loop runs: the explicit-parameter form when ``func``
    offers one (:mod:`physode.ode.explicit_field`), as the compiled ACA does."""
    form = explicit_form(func)
    return func if form is None else form[0]


def _in_compiled_loop(func: VectorField, y0: torch.Tensor, t: torch.Tensor, times: list[float],
                      cfg: Config, gradient: str, ps: tuple[torch.Tensor, ...],
                      needs_grad: bool) -> tuple[torch.Tensor, Stats] | None:
    """The solve as compiled loops (:mod:`physode.ode.compiled_loop`) when it applies:
    forward only, or ``gradient="aca"`` with the parameters of an ``nn.Module`` field; None
    when it does not (then the per-step compiled path runs). A field the compiler cannot
    handle falls back once, with a warning, and is not tried again."""
    return try_loops(
        func, cfg, len(times), gradient, ps, needs_grad, _NOT_LOOPABLE,
        lambda: integrate_compiled(_loop_field(func), y0, times, cfg),
        lambda names: compiled_aca_solve(func, y0, t, times, cfg, ps, names),
        f"the whole {cfg.method.name} solve", "compiling step by step instead")


def solve(
    func: VectorField, y0: torch.Tensor, t: Times, *, method: str = "dopri5",
    rtol: float | torch.Tensor = 1e-6, atol: float | torch.Tensor = 1e-8,
    gradient: str = "aca", params: Iterable[torch.Tensor] | None = None,
    options: Mapping[str, object] | None = None, compile: bool = False,
    per_sample: bool = False, events: Sequence[Event] | None = None,
) -> Solution:
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` and return a :class:`Solution`.

    ``func(t, y)`` returns a tensor shaped like ``y`` (``t`` a 0-d tensor). ``y0``: a
    float32 or float64 tensor of any shape; an empty ``y0`` (no elements) returns
    ``y0`` at every time without calling ``func``. ``t``: 1-D, strictly increasing or
    decreasing. ``method``: one of :data:`physode.ode.methods.METHODS` (euler, midpoint,
    rk4 fixed-step; heun_euler, bosh3, dopri5, tsit5, dopri8 adaptive; rosenbrock23,
    rodas4, rodas5p stiff; leapfrog, yoshida4 symplectic). ``rtol``/``atol``: positive scalars or
    tensors broadcasting against ``y0``. ``gradient``: "aca" (exact discrete gradient,
    checkpoint memory), "direct" (backprop through the accepted steps) or "adjoint"
    (continuous adjoint). ``params``: tensors to differentiate besides ``y0`` and ``t``
    (default: the parameters of ``func`` when it is an ``nn.Module``).

    ``options`` (a dict): ``first_step``, ``max_step``, ``max_steps`` (100000; a fixed-step
    grid longer than that is refused before it is built), ``step_size`` (fixed-step
    methods), ``step_to_outputs`` (land on every output time instead of interpolating),
    ``controller``: the step-size controller, an object with ``init(method)`` and
    ``adapt(h, ratio) -> (accept, h_next)`` (a
    :class:`physode.ode.controller.StepSizeController`; default
    :class:`~physode.ode.controller.PIController`), or the default PI controller's
    ``safety`` (0.9), ``ifactor`` (10), ``dfactor`` (0.2) and ``beta`` (the method's gain,
    0). ``compile``: adaptive explicit Runge–Kutta and Rosenbrock solves run as compiled
    loops — the whole adaptive loop, and ACA's reverse sweep, in compiled graphs with no
    Python per step (:mod:`physode.ode.compiled_loop`; the default PI controller, interpolated
    outputs); other explicit set-ups compile each step (forward and ACA rebuild). Pays off
    for small systems solved many times (a fit), after a one-off compilation. Other
    methods run eagerly.

    ``per_sample=True``: ``y0`` of shape ``(B, *state)`` holds B independent problems, each
    solved with its own step sizes, error norm and accept/reject decisions (a stiff sample
    no longer drags the batch to its step size); ``func`` is called on the whole batch and
    must act row-wise, with ``t`` a tensor of shape ``(B,)`` (one time per sample). ``t``
    is ``(n,)`` (shared) or ``(n, B)`` (column b for sample b); ``ys`` has shape
    ``(n, B, *state)``; ``stats`` is a :class:`~physode.ode.batch_parts.BatchStats`
    (``stats[b]``: sample b's counters). Adaptive explicit Runge–Kutta methods, the default
    PI controller, gradients "aca" and "direct"; ``compile`` runs it as compiled loops
    (:mod:`physode.ode.compiled_batch`; forward and ACA).

    ``events``: a list of :class:`physode.events.AtTime` (a state change at a known time)
    and :class:`physode.events.When` (at a zero crossing of a condition, located on the
    dense output); ``options["tstops"]``: known breakpoints (kinks of an input) inside
    the span, which no step straddles; ``options["max_events"]``: the most ``When``
    events that may fire (1000; more is an error, as for Zeno behaviour). With either,
    the solve restarts at each such time (:mod:`physode.ode.segments`), gradients are
    exact through the jumps and the event times, ``Solution.events`` lists the events
    that fired, an output at the time of a jump gets the state after it, and outputs
    after a terminal event are NaN (the shape stays ``(len(t), *y0.shape)``).
    """
    if not callable(func):
        raise InvalidArgument(f"func must be callable as func(t, y), got {type(func).__name__}")
    y0 = check_state(y0)
    gradient = check_gradient(gradient)
    if per_sample and (events is not None or (options or {}).get("tstops") is not None):
        raise InvalidArgument("events and options['tstops'] are not available with "
                              "per_sample=True; solve the samples one by one")
    if per_sample:  # each sample its own step size: physode.ode.batch_solve
        cfg = make_config(method, rtol, atol, options, y0)
        ps = _params(func, params) if gradient != "direct" else ()
        t_b, ys_b, stats_b = solve_batch(func, y0, t, cfg, gradient, ps, compile)
        return Solution(ts=t_b, ys=ys_b, stats=stats_b)
    t_tensor, times = _times(t)
    cfg = make_config(method, rtol, atol, options, y0)
    if gradient == "adjoint" and not cfg.method.supports_adjoint:
        raise InvalidArgument(f"gradient='adjoint' is not available with method {method!r} "
                              "(its backward solve has no position/velocity split); use "
                              "gradient='aca', which is exact")
    ps = _params(func, params) if gradient != "direct" else ()
    plan = plan_segments(events, options, times)
    if y0.numel() == 0:  # nothing to integrate: the empty state at every time
        ys = y0.unsqueeze(0).expand(len(times), *y0.shape).clone()
        return Solution(ts=t_tensor, ys=ys, stats=Stats())
    if plan is not None:  # events or tstops: ordinary solves between restarts
        return _segmented(func, y0, t_tensor, times, cfg, plan, method=method, rtol=rtol,
                          atol=atol, gradient=gradient, params=ps, compile=compile)
    needs_grad = torch.is_grad_enabled() and (
        y0.requires_grad or t_tensor.requires_grad or any(p.requires_grad for p in ps)
        or gradient == "direct")
    if compile:
        whole = _in_compiled_loop(func, y0, t_tensor, times, cfg, gradient, ps, needs_grad)
        if whole is not None:
            return Solution(ts=t_tensor, ys=whole[0], stats=whole[1])
        cfg.method = compiled(cfg.method)
    if not needs_grad:
        with torch.no_grad():
            ys, stats = integrate(func, y0, times, cfg)
    else:
        ys, stats = GRADIENTS[gradient](func, y0, t_tensor, times, cfg, ps)
    return Solution(ts=t_tensor, ys=ys, stats=stats)


def _segmented(func: VectorField, y0: torch.Tensor, t: torch.Tensor, times: list[float],
               cfg: Config, plan: Plan, *, method: str, rtol: float | torch.Tensor,
               atol: float | torch.Tensor, gradient: str, params: tuple[torch.Tensor, ...],
               compile: bool) -> Solution:
    """A solve cut at events and ``tstops`` (:mod:`physode.ode.segments`): each segment is
    this module's own ``solve`` with the same settings."""

    def run(y: torch.Tensor, t_seg: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        sol = solve(func, y, t_seg, method=method, rtol=rtol, atol=atol, gradient=gradient,
                    params=params, options=plan.options, compile=compile)
        return sol.ys, sol.stats

    ys, stats, fired = solve_segments(func, y0, t, times, cfg, plan, run)
    return Solution(ts=t, ys=ys, stats=stats, events=fired)


def odeint(
    func: VectorField, y0: torch.Tensor, t: Times, *, method: str = "dopri5",
    rtol: float | torch.Tensor = 1e-6, atol: float | torch.Tensor = 1e-8,
    gradient: str = "aca", params: Iterable[torch.Tensor] | None = None,
    options: Mapping[str, object] | None = None, compile: bool = False,
    per_sample: bool = False, events: Sequence[Event] | None = None,
) -> torch.Tensor:
    """Drop-in for ``torchdiffeq.odeint``: the states at times ``t``, shape
    ``(len(t), *y0.shape)``. See :func:`solve` for the arguments."""
    return solve(func, y0, t, method=method, rtol=rtol, atol=atol, gradient=gradient,
                 params=params, options=options, compile=compile, per_sample=per_sample,
                 events=events).ys


__all__ = ["Solution", "check_state", "make_config", "odeint", "solve"]
