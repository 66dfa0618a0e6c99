"""Forward sensitivities of many parameter vectors at once: RODAS4 steps with a step size
per sample, the sensitivity stages solved with the state's LU factors.

For ``x' = f(t, x, p)`` with ``x(t0) = x0(theta)`` and ``p = p(theta)``, the sensitivities
``S = dx/dtheta`` (``n x q``) obey ``S' = J S + F D`` with ``J = df/dx``, ``F = df/dp`` and
``D = dp/dtheta`` (Hairer, Nørsett & Wanner, Solving ODEs I, 2nd ed., sec. I.14). The
state and its sensitivities form one system whose Jacobian is block lower triangular::

    [ J  0       ]        H = d(J S + F D)/dx   (the second-derivative block)
    [ H  I (x) J ]

A Rosenbrock step with that exact Jacobian (RODAS4: Hairer & Wanner, Solving ODEs II,
IV.7) therefore needs one factorisation of ``I / (h gamma) - J`` per step, ``n x n`` as
for the state alone, and solves each stage by block forward substitution: ``U = W^-1 r_x``,
then ``V = W^-1 (r_S + H U)``. This is the staggered direct idea of CVODES (Hindmarsh et
al., ACM TOMS 31:363, 2005, sec. 3.2) carried to a linearly implicit method: the
sensitivities are integrated with the same order and step as the state, and the error
control covers both (CVODES's ``errconS``), so the Jacobian of a least-squares residual
built from them is accurate to the tolerance.

Every sample ``b`` (a row of ``x0``, ``p``, ``D``) has its own time, step size, accepted
and rejected steps and stop times (the output times shared by all, then its own
breakpoints, where the step lands exactly and the next one starts afresh). One loop
iteration attempts one step of every unfinished sample with batched tensor operations,
so the per-operation overhead of eager PyTorch is paid once for the whole batch: the
point of this module, which serves multistart fits (one sample per start). With the
closed-form second-order blocks, ``H u`` is one directional evaluation per stage along
that stage's ``u``. Without them, ``H U`` and the time derivatives come from one
forward-mode evaluation per step of ``f``, ``J`` and ``F`` along the ``n`` state
directions (and time, for a non-autonomous field), the directions stacked on a leading
axis: the model's functions must broadcast over leading axes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import partial

import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor

from physode.errors import InvalidArgument
from physode.ode.sensitivity_loop import solve_compiled
from physode.ode.sensitivity_step import (
    TABLEAUS,
    SensitivityField,
    SensitivityModel,
    SensitivityResult,
    _hu_eval,
    _rms,
    _stage_eval,
    _start_eval,
    _step,
    advance,
    next_step_size,
    small_matmul,
)
from physode.ode.vec_isa import isa_options

_UNCOMPILABLE: set[SensitivityField] = set()
"""Fields whose compiled loop failed to build: they run eagerly from then on."""


def _merge_stops(times: Tensor, breaks: Tensor | None, t0: float) -> tuple[Tensor, Tensor]:
    """Per sample: the sorted stop times ``(B, K)`` and the output index of each stop
    (-1 for a breakpoint); breakpoints outside ``(t0, times[-1])`` become ``inf``."""
    B = breaks.shape[0] if breaks is not None else 1
    stops = times.expand(B, -1)
    index = torch.arange(len(times)).expand(B, -1)
    if breaks is not None and breaks.shape[1]:
        inside = (breaks > t0) & (breaks < times[-1])
        b = torch.where(inside, breaks, torch.full_like(breaks, math.inf))
        stops = torch.cat([stops, b], dim=1)
        index = torch.cat([index, torch.full(b.shape, -1)], dim=1)
        stops, order = torch.sort(stops, dim=1, stable=True)
        index = torch.gather(index, 1, order)
    return stops.contiguous(), index.contiguous()


def _dual(primal: Tensor, tangent: Tensor) -> Tensor:
    """A dual tensor at the current forward-AD level (own memory for both parts)."""
    out: Tensor = fwad.make_dual(primal.contiguous(),  # type: ignore[no-untyped-call]
                                 tangent.contiguous())
    return out


def _unpack(v: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(primal, tangent or None)`` of a dual tensor."""
    pair = fwad.unpack_dual(v)  # type: ignore[no-untyped-call]
    return pair.primal, pair.tangent


def _start_dual(field: SensitivityField, t: Tensor, x: Tensor, s: Tensor, p: Tensor,
                dp: Tensor) -> tuple[Tensor, ...]:
    """:func:`_start_eval` by forward-mode differentiation along the ``n`` state
    directions (and time), stacked on a leading axis: for fields without closed-form
    second-order blocks."""
    n, B = x.shape[1], x.shape[0]
    dirs = n if field.autonomous else n + 1
    eye = torch.eye(dirs, n + 1, dtype=x.dtype)
    with fwad.dual_level():
        xd = _dual(x.expand(dirs, -1, -1), eye[:, None, :n].expand(-1, B, -1))
        td = _dual(t.expand(dirs, -1), eye[:, n:].expand(-1, B))
        f, df = _unpack(field.rhs(td, xd, p))
        J, dJ = _unpack(field.jacobian(td, xd, p))
        F, dF = _unpack(field.param_jacobian(td, xd, p))
    df = torch.zeros((dirs, B, n), dtype=x.dtype) if df is None else df.expand(dirs, B, n)
    dJ = torch.zeros((dirs, B, n, n), dtype=x.dtype) if dJ is None else dJ
    dF = torch.zeros((dirs, *F.shape[1:]), dtype=x.dtype) if dF is None else dF
    J0 = J[0].expand(B, n, n)
    G0 = J0 @ s + F[0] @ dp
    dG = dJ.expand(dirs, B, n, n) @ s + dF.expand(dirs, *F.shape[1:]) @ dp
    out = (f[0], J0, G0, dG[:n])
    return out if field.autonomous else (*out, df[n], dG[n])


class _Kernels:
    """The model evaluations of a step, eager or compiled once per field
    (``torch.compile`` with a dynamic batch size): a compiled kernel fuses the hundreds
    of tiny elementwise operations of a generated model into a few loops, which is where
    an eager step spends its time. A compilation that fails falls back to eager with a
    warning."""

    _cache: dict[tuple[SensitivityField, bool], _Kernels] = {}

    def __init__(self, field: SensitivityField, compiled: bool) -> None:
        start = _start_eval if field.closed_form else _start_dual
        self.field = field
        self.start: Callable[..., tuple[Tensor, ...]] = partial(start, field)
        self.stage: Callable[..., tuple[Tensor, ...]] = partial(_stage_eval, field)
        self.hdir: Callable[..., tuple[Tensor, ...]] = partial(_hu_eval, field)
        self.compiled = compiled and field.closed_form
        if self.compiled:
            self._eager = (self.start, self.stage, self.hdir)
            isa = isa_options()
            self.start = torch.compile(self.start, dynamic=True, options=isa)
            self.stage = torch.compile(self.stage, dynamic=True, options=isa)
            self.hdir = torch.compile(self.hdir, dynamic=True, options=isa)

    @classmethod
    def of(cls, field: SensitivityField, compiled: bool) -> _Kernels:
        key = (field, compiled)  # equal fields hold the same functions
        k = cls._cache.get(key)
        if k is None:
            k = cls._cache[key] = cls(field, compiled)
        return k

    def call(self, which: int, *args: Tensor) -> tuple[Tensor, ...]:
        fn = (self.start, self.stage, self.hdir)[which]
        if not self.compiled:
            return fn(*args)
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: run eager
            warnings.warn(f"compiling the sensitivity kernels failed ({type(exc).__name__}: "
                          f"{exc}); running them eagerly", RuntimeWarning, stacklevel=3)
            self.compiled = False
            self.start, self.stage, self.hdir = self._eager
            return self.call(which, *args)


def solve_sensitivities(field: SensitivityField, x0: Tensor, s0: Tensor, p: Tensor,
                        dp: Tensor, times: Tensor, *, t0: float = 0.0,
                        breaks: Tensor | None = None, rtol: float = 1e-6,
                        atol: float = 1e-8, max_steps: int = 10000,
                        error_control: bool = False, compile: bool = False,
                        compiled_loop: bool = False, method: str = "rodas4"
                        ) -> SensitivityResult:
    """States and sensitivities of ``B`` samples at the shared output ``times``.

    ``x0 (B, n)``, ``s0 (B, n, q)`` (``dx0/dtheta``), ``p (B, P)``, ``dp (B, P, q)``
    (``dp/dtheta``), ``times (T,)`` increasing and ``>= t0``, ``breaks (B, K)``: per-sample
    times of discontinuities (``inf`` for none) where a step must end. The error of a step
    is the state's weighted RMS norm, weights ``1 / (atol + rtol |.|)``; with
    ``error_control`` the larger of that and the sensitivities' norm (CVODES's
    ``errconS``, off by default there too: the sensitivities then share the state's steps
    and order, and are accurate where the steps resolve the state). ``compile``: run the
    model evaluations as compiled kernels (:class:`_Kernels`; a one-off compilation of
    tens of seconds, then about half the time per step). A sample whose step size
    underflows, whose steps exceed ``max_steps`` or whose factorisation fails is marked
    ``ok = False``. ``compiled_loop``: for a field with closed-form blocks, the whole
    loop as one compiled graph instead (:mod:`physode.ode.sensitivity_loop`: no Python
    per step, the same steps; a one-off compilation per shape).
    """
    if method not in TABLEAUS:
        raise InvalidArgument(f"solve_sensitivities: method must be one of {sorted(TABLEAUS)}, "
                              f"got {method!r}")
    tab = TABLEAUS[method]
    B, n = x0.shape
    q = s0.shape[2]
    if s0.shape[:2] != (B, n) or p.shape[0] != B or dp.shape != (B, p.shape[1], q):
        raise InvalidArgument(f"solve_sensitivities: shapes x0 {tuple(x0.shape)}, s0 "
                              f"{tuple(s0.shape)}, p {tuple(p.shape)}, dp {tuple(dp.shape)} "
                              "do not agree")
    times = times.to(x0.dtype)
    if len(times) == 0 or bool((times[1:] <= times[:-1]).any()) or float(times[0]) < t0:
        raise InvalidArgument("solve_sensitivities: times must be increasing and >= t0")
    kernels = _Kernels.of(field, compile)
    stops, out_index = _merge_stops(times, breaks, t0)
    stops = stops.expand(B, -1).contiguous()
    out_index = out_index.expand(B, -1).contiguous()
    K = stops.shape[1]
    xs = x0.new_full((B, len(times), n), math.nan)
    ss = x0.new_full((B, len(times), n, q), math.nan)
    ok = torch.ones(B, dtype=torch.bool)
    steps = torch.zeros(B, dtype=torch.long)
    rejected = torch.zeros(B, dtype=torch.long)

    # the working set: rows of the unfinished samples only
    rows = torch.arange(B)
    t = x0.new_full((B,), t0)
    x, s, pw, dpw = x0, s0, p, dp
    k = torch.zeros(B, dtype=torch.long)
    with torch.no_grad():
        f0 = field.rhs(t, x, pw)
        sc = atol + rtol * x.abs()
        d0, d1 = _rms(x, sc), _rms(f0, sc)
        h = torch.where((d0 > 1e-5) & (d1 > 1e-5), 0.01 * d0 / d1, x0.new_full((B,), 1e-6))
        span = float(times[-1]) - t0
        h = h.clamp(max=max(span, 1e-12))
        if compiled_loop and field.closed_form and field not in _UNCOMPILABLE:
            try:
                return solve_compiled(field, x0, s0, p, dp, stops, out_index, len(times),
                                      t0, h, rtol, atol, max_steps, error_control, method)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: run eager
                _UNCOMPILABLE.add(field)
                warnings.warn(f"compiling the staggered sensitivity loop failed "
                              f"({type(exc).__name__}: {str(exc)[:300]}); running it eagerly",
                              RuntimeWarning, stacklevel=2)
        last_reject = torch.zeros(B, dtype=torch.bool)
        while len(rows):
            # stops reached (outputs at t0, repeated stops): record them, move on
            stop = stops[rows, k.clamp(max=K - 1)]
            at = (k < K) & (stop - t <= 1e-13 * torch.clamp(t.abs(), min=1.0))
            while bool(at.any()):
                idx = at.nonzero()[:, 0]
                o = out_index[rows[idx], k[idx]]
                rec = o >= 0
                xs[rows[idx[rec]], o[rec]] = x[idx[rec]]
                ss[rows[idx[rec]], o[rec]] = s[idx[rec]]
                k = k + at.long()
                stop = stops[rows, k.clamp(max=K - 1)]
                at = (k < K) & (stop - t <= 1e-13 * torch.clamp(t.abs(), min=1.0))
            live = (k < K) & torch.isfinite(stop)
            if not bool(live.all()):
                keep = live.nonzero()[:, 0]
                rows, t, x, s, pw, dpw, k, h, stop, last_reject = (
                    a[keep] for a in (rows, t, x, s, pw, dpw, k, h, stop, last_reject))
                if not len(rows):
                    break
            hit = h >= stop - t
            h_free = h
            h = torch.where(hit, stop - t, h)
            x1, s1, ex, es = _step(kernels.call, t, h, x, s, pw, dpw, tab)
            scx = atol + rtol * torch.maximum(x.abs(), x1.abs())
            err = _rms(ex, scx)
            if error_control:
                err = torch.maximum(err, _rms(es, atol + rtol * torch.maximum(s.abs(),
                                                                             s1.abs())))
            err = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
            accept = err <= 1.0
            steps[rows] += 1
            rejected[rows] += (~accept).long()
            t, x, s = advance(accept, hit, t, h, stop, x, x1, s, s1)
            h = next_step_size(h, h_free, err, accept, hit, last_reject, tab)
            last_reject = ~accept
            after = stops[rows, (k + 1).clamp(max=K - 1)]
            done = accept & hit & ((k + 1 >= K) | ~torch.isfinite(after))  # on its last stop
            dead = ~done & ((h < 1e-14 * torch.clamp(t.abs(), min=1.0))
                            | (steps[rows] >= max_steps))
            if bool(dead.any()):
                ok[rows[dead]] = False
                k = torch.where(dead, torch.full_like(k, K), k)
    return SensitivityResult(xs, ss, ok, steps, rejected)


__all__ = [
    "SensitivityField",
    "SensitivityModel",
    "SensitivityResult",
    "small_matmul",
    "solve_sensitivities",
]
