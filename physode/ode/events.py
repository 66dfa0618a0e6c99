"""Events: state changes at known times (:class:`AtTime`) and at zero crossings (:class:`When`).

An event changes the state during a solve — a bolus ``y + dose``, a reset, a bounce — or
stops it. :func:`physode.ode.solve.solve` takes a list of them (``events=[...]``) and
restarts the integration at each one (:mod:`physode.ode.segments`); this module holds the
event objects, their validation, the record of an event that fired, and the location of
a zero crossing on the dense output of the accepted step that brackets it.

Location: the step that ends with ``condition`` on the other side of zero is the bracket;
the crossing is found on that step's continuous extension (Hairer, Nørsett & Wanner,
*Solving ODEs I*, II.6, "Dense output" and its use for discontinuities) by the Illinois
variant of regula falsi (Dowell & Jarratt, "A modified regula falsi method for computing
the root of an equation", BIT 11, 1971), to a few units of round-off in t. A crossing is
a change of sign between two accepted step ends: two crossings inside one step cancel and
go unseen (as in scipy's ``solve_ivp`` and SUNDIALS), so keep ``max_step`` below the
shortest excursion of ``condition`` you need to see.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from physode.errors import InvalidArgument, SolverError
from physode.ode.methods.base import Method
from physode.ode.methods.step import Step, VectorField, time_tensor

Apply = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``apply(t, y) -> y_new``: the state right after an event, shaped like ``y``."""

Condition = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``condition(t, y) -> 0-d tensor``: the event fires where it crosses zero."""


def _name(obj: object) -> str:
    """A function's name, or the type name of another callable (for reprs)."""
    if isinstance(obj, types.FunctionType):
        return obj.__name__
    return type(obj).__name__


class Event:
    """Base class of the events :func:`physode.ode.solve.solve` accepts."""

    apply: Apply | None
    terminal: bool = False


class AtTime(Event):
    """A state change at a known time: ``y(time+) = apply(time, y(time-))``.

    ``time``: a float or a 0-d tensor; a tensor that requires grad gets its gradient
    (moving the time of a dose moves everything after it). ``apply(t, y) -> y_new``: e.g.
    ``lambda t, y: y + dose`` (a bolus; ``dose`` a tensor, differentiable), a reset, a
    switch of a state-held parameter. Several events at one time apply in list order.
    The time must lie in the span of the output times (ends included).
    """

    def __init__(self, time: float | torch.Tensor, apply: Apply) -> None:
        if isinstance(time, torch.Tensor):
            if time.numel() != 1 or time.is_complex() or time.is_meta:
                raise InvalidArgument(f"AtTime: time must be a number or a 0-d real tensor, "
                                      f"got a tensor of shape {tuple(time.shape)}")
            value = float(time.detach())
        elif isinstance(time, bool) or not isinstance(time, (int, float)):
            raise InvalidArgument(f"AtTime: time must be a number or a 0-d tensor, got "
                                  f"{type(time).__name__}")
        else:
            value = float(time)
        if not math.isfinite(value):
            raise InvalidArgument(f"AtTime: time must be finite, got {value!r}")
        if not callable(apply):
            raise InvalidArgument(f"AtTime at t={value:.17g}: apply must be callable as "
                                  f"apply(t, y) -> new y, got {type(apply).__name__}")
        self.time = time
        self.value = value
        self.apply: Apply | None = apply

    def time_tensor(self, like: torch.Tensor) -> torch.Tensor:
        """The event time as a 0-d tensor of ``like``'s dtype (differentiable if given so)."""
        if isinstance(self.time, torch.Tensor):
            return self.time.reshape(()).to(dtype=like.dtype, device=like.device)
        return time_tensor(self.value, like)

    def __repr__(self) -> str:
        return f"AtTime({self.value:.17g}, {_name(self.apply)})"


class When(Event):
    """A state event: fires where ``condition(t, y)`` crosses zero.

    ``condition(t, y) -> 0-d tensor``. ``direction``: +1 fires only on rising crossings
    (negative to positive as the solve advances), -1 only on falling ones, 0 on both.
    ``apply(t, y) -> y_new`` changes the state at the crossing (None: no change, the
    event is only recorded); the solve restarts there. ``terminal=True`` stops the solve
    at the first crossing (outputs after it are NaN; see :func:`physode.ode.solve.solve`).

    The crossing time t* is found on the dense output of the accepted step that brackets
    it and is differentiable by the implicit function theorem (see
    :mod:`physode.ode.segments`). Right after an event the condition sits at zero: the
    side it leaves to is taken from its rate along the flow, so an event does not fire
    again at its own restart point. A jump of the condition caused by an ``apply`` is not
    a crossing (only the flow's crossings fire events).
    """

    def __init__(self, condition: Condition, apply: Apply | None = None,
                 terminal: bool = False, direction: int = 0) -> None:
        if not callable(condition):
            raise InvalidArgument(f"When: condition must be callable as condition(t, y) -> "
                                  f"0-d tensor, got {type(condition).__name__}")
        if apply is not None and not callable(apply):
            raise InvalidArgument(f"When: apply must be None or callable as apply(t, y) -> "
                                  f"new y, got {type(apply).__name__}")
        if not isinstance(terminal, bool):
            raise InvalidArgument(f"When: terminal must be True or False, got {terminal!r}")
        if isinstance(direction, bool) or direction not in (-1, 0, 1):
            raise InvalidArgument(f"When: direction must be -1, 0 or +1, got {direction!r}")
        self.condition = condition
        self.apply = apply
        self.terminal = terminal
        self.direction = int(direction)

    def __repr__(self) -> str:
        return (f"When({_name(self.condition)}, terminal={self.terminal}, "
                f"direction={self.direction})")


@dataclass
class EventRecord:
    """One event that fired: its index in ``events``, its time (a 0-d tensor, differentiable
    through the event's parameters: a tensor ``AtTime`` time, or a ``When`` crossing by the
    implicit function theorem), the state just before and just after it, and whether it
    stopped the solve."""

    index: int
    time: torch.Tensor
    y_before: torch.Tensor
    y_after: torch.Tensor
    terminal: bool = False


def check_events(events: object) -> tuple[Event, ...]:
    """``events`` as a tuple of :class:`Event`; :class:`InvalidArgument` naming the bad one."""
    if isinstance(events, (Event, torch.Tensor)) or not isinstance(events, Sequence):
        raise InvalidArgument(f"events must be a list of physode.events.AtTime / When, got "
                              f"{type(events).__name__}")
    out = tuple(events)
    for i, ev in enumerate(out):
        if not isinstance(ev, (AtTime, When)):
            raise InvalidArgument(f"events[{i}] is a {type(ev).__name__}, not a "
                                  "physode.events.AtTime or physode.events.When")
    return out


def check_new_state(value: object, y: torch.Tensor, index: int, t: float) -> torch.Tensor:
    """What ``events[index].apply`` returned, if it is a state shaped like ``y``."""
    if not isinstance(value, torch.Tensor):
        raise InvalidArgument(f"events[{index}]: apply(t, y) must return a tensor shaped like "
                              f"y, got {type(value).__name__} at t={t:.17g}")
    if value.shape != y.shape or value.dtype != y.dtype:
        raise InvalidArgument(
            f"events[{index}]: apply(t, y) returned shape {tuple(value.shape)} dtype "
            f"{value.dtype} at t={t:.17g}; it must match y ({tuple(y.shape)}, {y.dtype})")
    if not bool(torch.isfinite(value.detach()).all()):
        raise SolverError(f"events[{index}]: apply(t, y) returned a non-finite state at "
                          f"t={t:.17g}", t)
    return value


def condition_value(event: When, index: int, t: float | torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor:
    """``condition(t, y)`` checked to be one finite number (a tensor, graph kept)."""
    tt = t if isinstance(t, torch.Tensor) else time_tensor(t, y)
    g = event.condition(tt, y)
    tf = float(tt.detach())
    if not isinstance(g, torch.Tensor) or g.numel() != 1:
        what = type(g).__name__ if not isinstance(g, torch.Tensor) else f"shape {tuple(g.shape)}"
        raise InvalidArgument(f"events[{index}]: condition(t, y) must return a 0-d tensor, "
                              f"got {what} at t={tf:.17g}")
    if not math.isfinite(float(g.detach())):
        raise SolverError(f"events[{index}]: condition(t, y) is not finite at t={tf:.17g}", tf)
    return g.reshape(())


def rate(event: When, index: int, t: float, y: torch.Tensor, f: torch.Tensor) -> float:
    """dg/dt along the flow at (t, y): ``∂g/∂t + ∂g/∂y · f`` (one autograd call)."""
    with torch.enable_grad():
        tt = time_tensor(t, y).requires_grad_(True)
        yy = y.detach().requires_grad_(True)
        g = condition_value(event, index, tt, yy)
        if not g.requires_grad:
            return 0.0
        gt, gy = torch.autograd.grad(g, [tt, yy], allow_unused=True)
    out = 0.0 if gt is None else float(gt)
    if gy is not None:
        out += float((gy * f.detach()).sum())
    return out


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def illinois(fn: Callable[[float], float], a: float, b: float, fa: float, fb: float,
             xtol: float, max_iter: int = 200) -> float:
    """A root of ``fn`` in the bracket [a, b] (``fa``, ``fb`` of opposite signs, or one of
    them zero), returned from the side of ``b``: the Illinois method (Dowell & Jarratt
    1971), regula falsi that halves the stale end's value so both ends converge
    (superlinearly, order ~1.44), with a bisection step whenever the secant leaves the
    bracket. Stops when the bracket is narrower than ``xtol``."""
    if fb == 0.0:
        return b
    if fa == 0.0:
        return a
    side = 0
    for _ in range(max_iter):
        if abs(b - a) <= xtol:
            break
        c = (a * fb - b * fa) / (fb - fa)
        if not (min(a, b) < c < max(a, b)):
            c = 0.5 * (a + b)
        fc = fn(c)
        if fc == 0.0:
            return c
        if _sign(fc) == _sign(fb):
            b, fb = c, fc
            if side == -1:
                fa *= 0.5
            side = -1
        else:
            a, fa = c, fc
            if side == 1:
                fb *= 0.5
            side = 1
    return b


@dataclass
class Hit:
    """The first crossing found by a :class:`Watcher`: its time and which events fire."""

    t: float
    fired: list[int]


class Watcher:
    """Watches the accepted steps of a no-grad solve for zero crossings (the ``watch`` hook
    of :func:`physode.ode.loop.integrate`). ``signs[j]``: the side of zero each watched
    condition is on (0: not known yet — the first nonzero value sets it without firing).
    Returns True, and keeps the :class:`Hit`, at the step that brackets the first crossing
    in an event's direction; crossings against an event's direction only update its side."""

    def __init__(self, func: VectorField, method: Method, events: Sequence[Event],
                 watched: list[int], signs: dict[int, int]) -> None:
        self.func = func
        self.method = method
        self.events = events
        self.watched = watched
        self.signs = signs
        self.hit: Hit | None = None

    def _when(self, i: int) -> When:
        ev = self.events[i]
        assert isinstance(ev, When)
        return ev

    def __call__(self, t: float, h: float, y: torch.Tensor, f: torch.Tensor, step: Step,
                 f1: torch.Tensor) -> bool:
        t1 = t + h
        ends: dict[int, float] = {}
        for i in self.watched:
            g1 = float(condition_value(self._when(i), i, t1, step.y1))
            s1, s = _sign(g1), self.signs[i]
            if s1 == 0:
                continue
            if s == 0:
                self.signs[i] = s1
                continue
            if s1 != s:
                d = self._when(i).direction
                if d == 0 or d == s1:
                    ends[i] = g1
                else:
                    self.signs[i] = s1
        if not ends:
            return False
        ext = self.method.extended_stages(self.func, t, h, y, step.ks, f1)
        # theta in [0, 1]; the bracket ends are exact (the step start and its end y1)
        roots: dict[int, float] = {}
        eps = torch.finfo(y.dtype).eps
        xtol = 2 * eps * max(abs(t), abs(t1)) / abs(h) + 4 * eps
        for i, g1 in ends.items():
            ev = self._when(i)

            def g_at(theta: float, ev: When = ev, i: int = i) -> float:
                if theta == 1.0:
                    return float(condition_value(ev, i, t1, step.y1))
                yy = self.method.dense_eval(
                    h, y, ext, torch.tensor([theta], dtype=y.dtype, device=y.device))[0]
                return float(condition_value(ev, i, t + theta * h, yy))

            g0 = float(condition_value(ev, i, t, y))
            roots[i] = illinois(g_at, 0.0, 1.0, g0, g1, xtol)
        first = min(roots.values())
        fired = sorted(i for i, th in roots.items() if th <= first + xtol)
        self.hit = Hit(t1 if first == 1.0 else t + first * h, fired)
        return True


__all__ = ["AtTime", "Event", "EventRecord", "When", "check_events", "illinois"]
