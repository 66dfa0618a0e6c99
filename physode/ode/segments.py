"""A solve in segments, restarted at breakpoints (``tstops``), ``AtTime`` and ``When`` events.

:func:`physode.ode.solve.solve` hands a solve with events or ``options["tstops"]`` to
:func:`solve_segments`. The span is cut at every known breakpoint and event time, and
each piece is an ordinary solve (the caller's own ``solve``, with its gradient mode —
ACA, direct or adjoint, eager or compiled), so steps never straddle a breakpoint and a
kink in an input costs no rejected steps (Hairer, Nørsett & Wanner, *Solving ODEs I*,
II.4 "Discontinuities"; SUNDIALS' and DifferentialEquations.jl's ``tstops``).

``When`` events are searched for by a no-grad pass over the segment that stops at the
accepted step bracketing the first crossing (:class:`physode.ode.events.Watcher`); the
segment is then solved (with gradients) up to the crossing time t* exactly.

Gradients through events (Galán, Feehery & Barton, "Parametric sensitivity functions for
hybrid discrete/continuous systems", Appl. Numer. Math. 31, 1999; Chen, Amos & Nickel,
"Learning Neural Event Functions for Ordinary Differential Equations", ICLR 2021):

- the jump ``y+ = apply(t, y-)`` is an ordinary differentiable call, so doses and other
  tensors inside ``apply`` get their gradients by autograd;
- an event time τ moves the states on both sides of it: with δ = τ - detach(τ) (value 0,
  derivative that of τ), the segment that ends at τ ends in ``y- + f(τ, y-) δ`` and the
  next one starts from ``y+ - f(τ, y+) δ``. Values are unchanged; the derivative is the
  sensitivity-jump condition ``S+ = apply_y (S- + f- τ') + apply_t τ' - f+ τ'``;
- a ``When`` crossing time by the implicit function theorem on g(t*, y(t*; θ); θ) = 0:
  ``t*_diff = t* - (g - detach(g)) / detach(dg/dt + dg/dy · f)``, evaluated at the solved
  state at t*, so dt*/dθ = -(dg/dθ) / (dg/dt) along the flow.

An output at the very time of a jump gets the state after it (the solution is taken as
right-continuous); outputs after a terminal event are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from physode.errors import InvalidArgument, SolverError
from physode.ode.events import (
    AtTime,
    Event,
    EventRecord,
    Hit,
    Watcher,
    When,
    check_events,
    check_new_state,
    condition_value,
    rate,
)
from physode.ode.loop import Config, Stats, integrate
from physode.ode.methods.step import VectorField, time_tensor
from physode.ode.times import as_time_array

SEGMENT_OPTIONS = ("tstops", "max_events")
"""The options this module reads (the other options go to each segment's solve)."""

MAX_EVENTS = 1000

SpanSolve = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, Stats]]
"""``(y_start, t_segment) -> (states at t_segment, stats)``: one ordinary solve; the
segment's times are a float64 tensor (its interior entries are the caller's own output
times, with their gradient)."""


@dataclass(frozen=True)
class Plan:
    """What splits a solve: the events, the breakpoints, the cap on ``When`` events, and
    the options each segment's solve gets."""

    events: tuple[Event, ...]
    tstops: tuple[float, ...]
    max_events: int
    options: dict[str, object]


def _tstops(value: object, t0: float, t1: float) -> tuple[float, ...]:
    try:
        arr = as_time_array(value).reshape(-1)
    except (InvalidArgument, ValueError, TypeError) as exc:
        raise InvalidArgument(f"option tstops: {exc}") from None
    lo, hi = min(t0, t1), max(t0, t1)
    for i, x in enumerate(arr.tolist()):
        if not math.isfinite(x):
            raise InvalidArgument(f"option tstops: non-finite time {x!r} at index {i}")
        if not lo <= x <= hi:
            raise InvalidArgument(f"option tstops: time {x!r} at index {i} lies outside the "
                                  f"span [{lo:.17g}, {hi:.17g}] of t")
    return tuple(sorted(set(arr.tolist())))


def _max_events(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or value < 1:
        raise InvalidArgument(f"option max_events must be an integer >= 1, got {value!r}")
    return int(value)


def plan_segments(events: object, options: Mapping[str, object] | None,
                  times: list[float]) -> Plan | None:
    """The validated :class:`Plan` of a solve, or None when nothing splits it (no events,
    no ``tstops``): then the ordinary solve runs untouched."""
    evs = () if events is None else check_events(events)
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    t0, t1 = times[0], times[-1]
    stops = _tstops(opts.pop("tstops"), t0, t1) if "tstops" in opts else ()
    cap = _max_events(opts.pop("max_events")) if "max_events" in opts else MAX_EVENTS
    lo, hi = min(t0, t1), max(t0, t1)
    for i, ev in enumerate(evs):
        if isinstance(ev, AtTime) and not lo <= ev.value <= hi:
            raise InvalidArgument(f"events[{i}]: AtTime at t={ev.value:.17g} lies outside the "
                                  f"span [{lo:.17g}, {hi:.17g}] of t")
    if not evs and not stops:
        return None
    return Plan(evs, stops, cap, opts)


def _add(total: Stats, part: Stats) -> None:
    now = total.as_dict()
    for name, value in part.as_dict().items():
        setattr(total, name, now[name] + value)


class _Segments:
    """The segment loop of one solve (see :func:`solve_segments`)."""

    def __init__(self, func: VectorField, y0: torch.Tensor, t: torch.Tensor,
                 times: list[float], cfg: Config, plan: Plan, run: SpanSolve) -> None:
        self.func, self.y0, self.t, self.times = func, y0, t, times
        self.cfg, self.plan, self.run = cfg, plan, run
        self.events = plan.events
        self.n = len(times)
        self.direction = 1.0 if self.n == 1 or times[-1] > times[0] else -1.0
        self.outs: list[torch.Tensor | None] = [None] * self.n
        self.k = 0  # the next output to fill
        self.stats = Stats()
        self.records: list[EventRecord] = []
        self.watched = [i for i, ev in enumerate(self.events) if isinstance(ev, When)]
        self.fired = 0
        self.just_fired: dict[int, float] = {}  # event -> |g| at its own crossing
        self.eps = float(torch.finfo(y0.dtype).eps)
        self.grad = torch.is_grad_enabled()

    # -- helpers -------------------------------------------------------------------------
    def _before(self, a: float, b: float) -> bool:
        return self.direction * (a - b) < 0

    def _tiny(self, a: float, b: float) -> bool:
        return abs(b - a) <= 100 * self.eps * max(abs(a), abs(b))

    def _f(self, tau: float, y: torch.Tensor) -> torch.Tensor:
        """f(τ, y) without a graph (it multiplies δ, whose value is 0)."""
        self.stats.nfe += 1
        with torch.no_grad():
            return self.func(time_tensor(tau, y), y.detach())

    def _left_of(self, b: float, tau: float) -> float:
        """The number next to ``b`` towards ``tau`` in the state's dtype (the time func sees)."""
        dtype = self.y0.dtype
        left = torch.nextafter(torch.tensor(b, dtype=dtype), torch.tensor(tau, dtype=dtype))
        out = float(left)
        return out if self._before(tau, out) else b

    def _emit(self, tau: float, y: torch.Tensor) -> None:
        """Outputs at exactly ``tau``: the state there (after any jump at ``tau``)."""
        f: torch.Tensor | None = None
        while self.k < self.n and not self._before(tau, self.times[self.k]):
            out = y
            if self.k > 0 and self.grad and self.t.requires_grad:
                f = self._f(tau, y) if f is None else f
                tk = self.t[self.k].to(y.dtype)
                out = y + f * (tk - tk.detach())
            self.outs[self.k] = out
            self.k += 1

    # -- segments ------------------------------------------------------------------------
    def _span(self, tau: float, y: torch.Tensor, end: float) -> torch.Tensor:
        """Solve from (tau, y) to ``end``, filling the outputs strictly before ``end``;
        returns the state at ``end``."""
        k0 = self.k
        while self.k < self.n and self._before(self.times[self.k], end):
            self.k += 1
        if self._tiny(tau, end):  # nothing to integrate (an event right at a restart)
            for j in range(k0, self.k):
                self.outs[j] = y
            return y
        f64 = torch.float64
        t_seg = torch.cat([torch.tensor([tau], dtype=f64, device=self.t.device),
                           self.t[k0:self.k].to(f64),
                           torch.tensor([end], dtype=f64, device=self.t.device)])
        ys, stats = self.run(y, t_seg)
        _add(self.stats, stats)
        for m, j in enumerate(range(k0, self.k)):
            self.outs[j] = ys[m + 1]
        return ys[-1]

    def _signs(self, tau: float, y: torch.Tensor) -> dict[int, int]:
        """The side of zero each watched condition starts the segment on; at its own
        crossing (or exactly at zero) the side it leaves to, from its rate along the flow."""
        signs: dict[int, int] = {}
        f: torch.Tensor | None = None
        for i in self.watched:
            ev = self.events[i]
            assert isinstance(ev, When)
            with torch.no_grad():
                g = float(condition_value(ev, i, tau, y.detach()))
            s = (g > 0) - (g < 0)
            at_root = i in self.just_fired and abs(g) <= 2 * self.just_fired[i]
            if s == 0 or at_root:
                f = self._f(tau, y) if f is None else f
                r = rate(ev, i, tau, y, f) * self.direction
                s = (r > 0) - (r < 0)
            signs[i] = s
        self.just_fired = {}
        return signs

    def _detect(self, tau: float, y: torch.Tensor, end: float) -> Hit | None:
        """The first crossing between ``tau`` and ``end``, by a no-grad pass that stops at
        the accepted step bracketing it; None when there is none."""
        if not self.watched or self._tiny(tau, end):
            return None
        signs = self._signs(tau, y)
        watcher = Watcher(self.func, self.cfg.method, self.events, self.watched, signs)
        seg = [tau, end]
        if self.cfg.step_to_outputs:  # the same steps as the solve of the segment
            j = self.k
            while j < self.n and self._before(self.times[j], end):
                j += 1
            seg = [tau, *self.times[self.k:j], end]
        with torch.no_grad():
            _, stats = integrate(self.func, y.detach(), seg, self.cfg, watch=watcher)
        _add(self.stats, stats)
        return watcher.hit

    def _fire(self, hit: Hit, y_end: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """The events of ``hit`` at t*: the differentiable crossing time (implicit
        function theorem), each ``apply`` in index order, the records; returns the state
        the next segment starts from and whether a terminal event stopped the solve."""
        ts = hit.t
        f_end = self._f(ts, y_end)
        tt = time_tensor(ts, y_end)
        first = self.events[hit.fired[0]]
        assert isinstance(first, When)
        t_diff = tt
        y = y_end
        if self.grad:
            g = condition_value(first, hit.fired[0], tt, y_end)
            r = rate(first, hit.fired[0], ts, y_end, f_end)
            if g.requires_grad and r != 0.0:
                t_diff = tt - (g - g.detach()) / r
                y = y_end + f_end * (t_diff - t_diff.detach())
        stop = False
        changed = False
        for i in hit.fired:
            ev = self.events[i]
            assert isinstance(ev, When)
            self.fired += 1
            if self.fired > self.plan.max_events:
                raise SolverError(
                    f"more than max_events={self.plan.max_events} events fired by "
                    f"t={ts:.17g} (events[{i}] {ev!r}): the events accumulate (Zeno "
                    "behaviour, e.g. a bouncing ball coming to rest); stop the solve with a "
                    "terminal event or raise options['max_events']", ts)
            with torch.no_grad():
                self.just_fired[i] = abs(float(condition_value(ev, i, ts, y.detach())))
            y_new = y
            if ev.apply is not None:
                y_new = check_new_state(ev.apply(t_diff, y), y, i, ts)
                changed = True
            self.records.append(EventRecord(i, t_diff, y, y_new, ev.terminal))
            y = y_new
            stop = stop or ev.terminal
        if t_diff.requires_grad and not stop:
            f_new = self._f(ts, y) if changed else f_end
            y = y - f_new * (t_diff - t_diff.detach())
        return y, stop

    def _jumps(self, tau: float, y: torch.Tensor, indices: list[int],
               t_left: float) -> torch.Tensor:
        """The ``AtTime`` events at ``tau``, in list order (see the module docstring for
        the δ terms that make their times differentiable); ``t_left``: where the segment
        before them ended (f there is the derivative just before the jump)."""
        for i in indices:
            ev = self.events[i]
            assert isinstance(ev, AtTime) and ev.apply is not None
            tt = ev.time_tensor(y)
            moving = self.grad and tt.requires_grad
            y_at = y
            if moving:
                y_at = y + self._f(t_left, y) * (tt - tt.detach())
            y_new = check_new_state(ev.apply(tt, y_at), y, i, tau)
            self.records.append(EventRecord(i, tt, y_at, y_new))
            y = y_new
            if moving:
                y = y - self._f(tau, y) * (tt - tt.detach())
        return y

    def solve(self) -> tuple[torch.Tensor, Stats, list[EventRecord]]:
        times, d = self.times, self.direction
        t0, t1 = times[0], times[-1]
        at: dict[float, list[int]] = {}
        for i, ev in enumerate(self.events):
            if isinstance(ev, AtTime):
                at.setdefault(ev.value, []).append(i)
        stops = sorted({*self.plan.tstops, *at, t1}, key=lambda x: d * x)
        stops = [b for b in stops if self._before(t0, b)]
        known = {*self.plan.tstops, *at}
        y = self._jumps(t0, self.y0, at.get(t0, []), t0)
        self._emit(t0, y)
        if self.grad and self.t.requires_grad:  # moving t0 shifts the whole solution
            t_first = self.t[0].to(y.dtype)
            y = y - self._f(t0, y) * (t_first - t_first.detach())
        tau = t0
        for b in stops:
            # a segment ends one unit in the last place before a breakpoint, so that its
            # last stages see the left piece of an input that jumps there
            b_left = self._left_of(b, tau) if b in known else b
            while True:
                hit = self._detect(tau, y, b_left)
                end = b_left if hit is None else hit.t
                y = self._span(tau, y, end)
                if hit is None:
                    break
                y, stop = self._fire(hit, y)
                tau = hit.t
                self._emit(tau, y)
                if stop:
                    nan = torch.full_like(self.y0, math.nan)
                    for j in range(self.k, self.n):
                        self.outs[j] = nan
                    self.k = self.n
                    return self._result()
            tau = b
            y = self._jumps(b, y, at.get(b, []), b_left)
            self._emit(b, y)
        return self._result()

    def _result(self) -> tuple[torch.Tensor, Stats, list[EventRecord]]:
        outs = [o for o in self.outs if o is not None]
        assert len(outs) == self.n, "every output is filled"
        return torch.stack(outs), self.stats, self.records


def solve_segments(func: VectorField, y0: torch.Tensor, t: torch.Tensor, times: list[float],
                   cfg: Config, plan: Plan,
                   run: SpanSolve) -> tuple[torch.Tensor, Stats, list[EventRecord]]:
    """The states at ``times`` (shape ``(len(times), *y0.shape)``), the summed work
    counters of every segment (and of the event searches), and the events that fired,
    in order. ``run`` solves one segment (the caller's ordinary solve); ``cfg`` drives
    the event searches."""
    return _Segments(func, y0, t, times, cfg, plan, run).solve()


__all__ = ["MAX_EVENTS", "Plan", "SEGMENT_OPTIONS", "SpanSolve", "plan_segments",
           "solve_segments"]
