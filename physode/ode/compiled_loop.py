"""The whole adaptive solve as compiled loops: forward trials, dense output, ACA reverse sweep.

Compiling one step trial at a time (:mod:`physode.ode.compile`) leaves the controller, the
accept/reject decision and one host sync per trial in Python, behind ~50 µs of dynamo
guards and wrapper per call. Here the adaptive loop itself is a
``torch._higher_order_ops.while_loop`` compiled with inductor (C++ wrapper): trial, error
norm, PI controller, accept/reject, FSAL reuse and the checkpoint write run in one graph,
a chunk of accepted steps per call (:func:`chunk_rows`: up to 1024, within 8 MiB of
checkpoints), with Python only between chunks — so memory stays O(steps x state) and a
long solve never preallocates ``max_steps``.

Each accepted step also leaves its stages in the chunk's buffer, so the output times that
fall inside the chunk's steps are filled right after the chunk, all at once and without a
single evaluation of the vector field: each output's step is found by a search over the
step start times, and the method's dense-output polynomial ``y + h sum_j B_j(theta) K_j``
(``y + sum_j B_j(theta) U_j`` for Rosenbrock increments) is evaluated over that step's
stages. An output time that a step ends on exactly takes the
step's end state, as the eager loop does. The stages are dropped after their chunk.

ACA (Zhuang et al., ICML 2020, arXiv:2006.02493): the reverse sweep is a second compiled
loop over the checkpoints — rebuild step i and pull the cotangents of ``(y_{i+1}, f_{i+1})``
and of its stages back to ``(y_i, f_i, params)`` with ``torch.func.vjp``. The dense output
is linear in ``y_i`` and in the stages, so the outputs' cotangents reach them analytically
(``sum_o g_o`` and ``h B(theta_o)^T g_o``, scattered onto the steps they belong to), and an
output a step ends on adds its cotangent to that of ``y_{i+1}``. The result is the same
discrete gradient as the eager ACA, to round-off.

The semantics are those of :func:`physode.ode.loop.integrate` with the default
:class:`~physode.ode.controller.PIController`, written as tensor operations: the same
landing rule for the last step, underflow test, growth limits and no-growth-after-rejection
rule, so a compiled solve takes the same steps as the eager one.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch._higher_order_ops import while_loop as _while_loop

from physode.errors import MaxStepsExceeded, NonFiniteState, StepSizeUnderflow
from physode.ode.controller import PIController, initial_step
from physode.ode.loop import Config, Stats
from physode.ode.loop_buffers import CHUNK, Factors, Packing, Writes, chunk_rows, pack, unpack
from physode.ode.loop_compile import loop_options
from physode.ode.methods.base import Method
from physode.ode.methods.norm import Tol, error_norm
from physode.ode.methods.step import VectorField, time_tensor
from physode.ode.stiffness import stiffness_hint
from physode.ode.substitute import substituted

RUNNING, DONE, UNDERFLOW, MAX_STEPS, FULL = 0, 1, 2, 3, 4  # forward-loop status codes

run_while: Callable[..., tuple[Tensor, ...]] = _while_loop  # torch leaves it untyped
Hint = Callable[[float, Tensor, float], str]
Params = tuple[Tensor, ...]
Names = tuple[str, ...]


@dataclass(frozen=True)
class LoopSettings:
    """What the compiled loop needs of the solver configuration, as plain numbers."""

    t_end: float
    direction: float
    safety: float
    ifactor: float
    dfactor: float
    beta: float
    max_step: float
    max_steps: int
    q: int  # error order + 1: the controller's exponent is 1/q - 0.75 beta

    def tensor(self, like: Tensor) -> Tensor:
        """The settings as one tensor: graph inputs, not constants, so never a recompile."""
        return torch.tensor([self.t_end, self.direction, self.safety, self.ifactor,
                             self.dfactor, self.beta, self.max_step,
                             1.0 / self.q - 0.75 * self.beta, float(self.max_steps)],
                            dtype=like.dtype, device=like.device)


def field_of(func: VectorField, names: Names, params: Params) -> VectorField:
    """``func`` with its parameters called ``names`` replaced by ``params`` (pure), its
    declarations (closed-form Jacobian, autonomy) kept (:mod:`physode.ode.substitute`)."""
    return substituted(func, names, params)


def _end_derivative(method: Method, field: VectorField, t1: Tensor, y1: Tensor,
                    ks: list[Tensor]) -> Tensor:
    """``f(t + h, y1)``: the last stage of an FSAL method, else one evaluation."""
    return ks[-1] if method.fsal else field(t1, y1)


def _stages(method: Method, field: VectorField, t: Tensor, h: Tensor, y: Tensor,
            ks: list[Tensor], f1: Tensor) -> Tensor:
    """The step's extended stages (what its dense output combines), stacked."""
    return torch.stack(method.extended_stages(field, t, h, y, ks, f1))


def _forward_chunk(method: Method, func: VectorField, in_place: bool, t: Tensor, h: Tensor,
                   y: Tensor, f: Tensor, prev: Tensor, rejected: Tensor, nonfinite: Tensor,
                   trials: Tensor, ctl: Tensor, rtol: Tensor, atol: Tensor, ck_t: Tensor,
                   ck_h: Tensor, ck_y: Tensor, ck_f: Tensor, ck_k: Tensor,
                   ck_x: Tensor) -> tuple[Tensor, ...]:
    """Trials until the buffers' rows are filled with accepted steps, the end is reached,
    or the loop must stop (step-size underflow, ``max_steps``). Rows ``< acc`` of the
    buffers are then checkpoints (t, h, y, f) and the accepted steps' stages.

    ``in_place``: the buffers are written in place, not carried. A carried tensor is a
    fresh buffer on every trial, which copies the whole chunk per trial (1024 rows: 6.6
    against 0.7 µs per trial, measured). ``while_loop`` allows in-place writes to tensors
    it does not carry when no gradient is recorded; the forward loop never records one.
    Inductor cannot functionalise such writes next to ``torch.func`` transforms inside the
    step (the LM sensitivity field's ``vmap(jvp)``, a Rosenbrock Jacobian by ``jacrev``:
    an internal assert, after which the process's forward-AD level is left entered), so
    those loops carry the buffers, in chunks of ``CHUNK`` rows (``loop_buffers.Writes``).
    ``ck_x``, when it has rows (in place only): each accepted step's ``Step.factor``, for
    the reverse sweep to rebuild the step with. Returns the carry, and the buffers when
    they are carried."""
    eps = torch.finfo(y.dtype).eps
    chunk = ck_t.shape[0]
    zero = torch.zeros((), dtype=torch.int64, device=y.device)

    def cond(*carry: Tensor) -> Tensor:
        return carry[9] == RUNNING

    def body(t: Tensor, h: Tensor, y: Tensor, f: Tensor, prev: Tensor, rejected: Tensor,
             nonfinite: Tensor, trials: Tensor, acc: Tensor, status: Tensor,
             *carried: Tensor) -> tuple[Tensor, ...]:
        t_end, d, safety, ifactor, dfactor, beta, max_step, expo, max_trials = ctl.unbind()
        near = d * (t + 1.01 * h - t_end) >= 0  # land exactly on the end
        h_try = torch.where(near, t_end - t, h)
        t_new = torch.where(near, t_end, t + h)
        tiny = h_try.abs() <= 10 * eps * torch.clamp(t.abs(), min=1e-300)
        step = method.step(func, t, h_try, y, f)
        ratio = error_norm(step, y, rtol, atol)
        finite = torch.isfinite(ratio)
        ok = (ratio <= 1.0) & finite & ~tiny
        fac11 = torch.where(finite, ratio, torch.ones_like(ratio)) ** expo
        fac = torch.clamp(fac11 / prev**beta / safety, 1.0 / ifactor, 1.0 / dfactor)
        h_acc = h_try / fac
        h_acc = torch.where(rejected, torch.sign(h_try) * torch.minimum(h_acc.abs(),
                                                                         h_try.abs()), h_acc)
        h_rej = torch.where(finite, h_try / torch.minimum(1.0 / dfactor, fac11 / safety),
                            h_try * dfactor)
        h_next = d * torch.minimum(torch.where(ok, h_acc, h_rej).abs(), max_step)
        f1 = _end_derivative(method, func, t_new, step.y1, step.ks)
        slot = (acc.reshape(1),)
        rows = (t.reshape(1), h_try.reshape(1), y.unsqueeze(0), f.unsqueeze(0),
                _stages(method, func, t, h_try, y, step.ks, f1).unsqueeze(0))
        if in_place:
            for buf, row in zip((ck_t, ck_h, ck_y, ck_f, ck_k), rows):
                buf.index_put_(slot, row)
            if ck_x.shape[0] and step.factor is not None:
                ck_x.index_put_(slot, step.factor.unsqueeze(0))
        else:
            carried = tuple(buf.index_put(slot, row) for buf, row in zip(carried, rows))
        trials = trials + (~tiny).long()
        acc = acc + ok.long()
        status = torch.where(tiny, UNDERFLOW, RUNNING)
        status = torch.where(ok & near, DONE, status)
        status = torch.where((status == RUNNING) & (trials >= max_trials.long()), MAX_STEPS,
                             status)
        status = torch.where((status == RUNNING) & (acc >= chunk), FULL, status)
        return (torch.where(ok, t_new, t), torch.where(tiny, h, h_next),
                torch.where(ok, step.y1, y), torch.where(ok, f1, f),
                torch.where(ok, torch.clamp(ratio, min=1e-4), prev), ~ok & ~tiny,
                torch.where(tiny, nonfinite, ~finite), trials, acc, status, *carried)

    bufs = () if in_place else (ck_t, ck_h, ck_y, ck_f, ck_k)
    out: tuple[Tensor, ...] = run_while(
        cond, body, (t, h, y, f, prev, rejected, nonfinite, trials, zero, zero.clone(), *bufs))
    return out


def _reverse_chunk(method: Method, func: VectorField, names: Names, last: Tensor, a_y: Tensor,
                   a_f: Tensor, ck_t: Tensor, ck_h: Tensor, ck_y: Tensor, ck_f: Tensor,
                   ck_x: Tensor, end_cot: Tensor, y_cot: Tensor, k_cot: Tensor,
                   spec: Packing, flat: Tensor) -> tuple[Tensor, ...]:
    """ACA's reverse sweep over one chunk of checkpoints, row ``last`` down to 0.

    At step i: the cotangent of an output the step ends on joins that of y_{i+1}; the
    rebuilt step pulls (a_y, a_f) and the cotangents of its stages (from the dense outputs
    inside it) back to (y_i, f_i, params); the dense outputs' direct share of y_i's
    cotangent is added. With factors in ``ck_x``, a stiff step is rebuilt with the
    inverse its forward trial computed (``Method.step_reusing``): same values, no second
    elimination. The parameters come packed into one vector ``flat`` (``spec``), so the
    loop carries one gradient however many parameter tensors the field has, instead of
    an accumulator per tensor with every update unrolled per tensor."""

    def cond(i: Tensor, *rest: Tensor) -> Tensor:
        return i >= 0

    def body(i: Tensor, a_y: Tensor, a_f: Tensor, g: Tensor) -> tuple[Tensor, ...]:
        row = i.reshape(1)
        t, h, y, f = (b.index_select(0, row)[0] for b in (ck_t, ck_h, ck_y, ck_f))
        a_y = a_y + end_cot.index_select(0, row)[0]

        x = ck_x.index_select(0, row)[0] if ck_x.shape[0] else None

        def rebuild(y_: Tensor, f_: Tensor, flat_: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            field = field_of(func, names, unpack(flat_, spec))
            step = (method.step(field, t, h, y_, f_) if x is None
                    else method.step_reusing(field, t, h, y_, f_, x))
            f1 = _end_derivative(method, field, t + h, step.y1, step.ks)
            return step.y1, f1, _stages(method, field, t, h, y_, step.ks, f1)

        pull = torch.func.vjp(rebuild, y, f, flat)[1]
        gy, gf, gp = pull((a_y, a_f, k_cot.index_select(0, row)[0]))
        return i - 1, gy + y_cot.index_select(0, row)[0], gf, g + gp

    i, a_y, a_f, g = run_while(cond, body, (last, a_y, a_f, torch.zeros_like(flat)))
    # the chunk's first derivative f = func(t, y) at row 0 pulled back to (y, params): for
    # the first chunk, where row 0 is (t0, y0) and f0 came from outside the loops, this
    # closes the sweep (one vjp here instead of an eager one after it)
    t0, y0 = ck_t[0], ck_y[0]

    def first(y_: Tensor, flat_: Tensor) -> Tensor:
        out: Tensor = field_of(func, names, unpack(flat_, spec))(t0, y_)
        return out

    gy0, gp0 = torch.func.vjp(first, y0, flat)[1](a_f)
    return i, a_y, a_f, g, a_y + gy0, g + gp0


@dataclass
class Chunk:
    """One forward call: its checkpoints (rows ``< n`` of t, h, y, f; the steps' factors
    in x, or no rows) and the outputs it produced, ``first`` up to ``first + len(local)``:
    the step each lies in (row of this chunk), whether it ends that step, and the step
    size and theta of its dense output."""

    t: Tensor
    h: Tensor
    y: Tensor
    f: Tensor
    x: Tensor
    n: int
    first: int
    local: Tensor
    at_end: Tensor
    hs: Tensor
    thetas: Tensor


@dataclass
class Forward:
    """A compiled forward solve: the outputs, and what the reverse sweep needs."""

    ys: Tensor
    chunks: list[Chunk]
    trials: int
    accepted: int


class CompiledLoop:
    """The compiled forward and reverse loops of one method, process-wide: a fit compiles
    them once; new step sizes, parameters or tolerances never recompile."""

    def __init__(self, method: Method) -> None:
        self.method = method
        interpolant = method.interpolant
        assert interpolant is not None  # y + scale sum_j B_j(theta) K_j, scale h or 1
        self.interpolant = interpolant
        loops = loop_options()
        self._forward = torch.compile(_forward_chunk, fullgraph=True, dynamic=False,
                                      options=loops)
        self._writes = Writes(method)  # in place or carried, per field
        self._reverse = torch.compile(_reverse_chunk, fullgraph=True, dynamic=False,
                                      options=loops)

    def forward(self, func: VectorField, y0: Tensor, times: list[float], f0: Tensor,
                h0: float, settings: LoopSettings, rtol: Tensor, atol: Tensor,
                hint: Hint) -> Forward:
        """All trials from ``(times[0], y0)`` to ``times[-1]`` and the states at ``times``;
        errors as the eager loop's (``hint(t, y, h)``: the stiffness sentence, computed on
        the failure path only)."""
        ctl = settings.tensor(y0)
        scalar: dict[str, Any] = {"dtype": y0.dtype, "device": y0.device}
        t, h = torch.tensor(times[0], **scalar), torch.tensor(h0, **scalar)
        prev = torch.tensor(1e-4, **scalar)
        rejected = torch.zeros((), dtype=torch.bool, device=y0.device)
        nonfinite = rejected.clone()
        trials = torch.zeros((), dtype=torch.int64, device=y0.device)
        y, f = y0, f0
        tau = torch.tensor(times, **scalar)
        d = settings.direction  # the output times as keys sorted along the solve, once
        along = times if d > 0 else [-x for x in times]
        outputs = [y0.unsqueeze(0)]
        chunks: list[Chunk] = []
        accepted, k = 0, 1
        n_ext = self.interpolant.n_vectors
        in_place = self._writes.in_place(func)
        factors = Factors(self.method, func, y0, in_place)
        rows = chunk_rows(y0, n_ext, factors.row_bytes) if in_place else CHUNK
        while True:
            ck = [torch.zeros(rows, **scalar), torch.zeros(rows, **scalar),
                  y0.new_zeros((rows, *y0.shape)), y0.new_zeros((rows, *y0.shape)),
                  y0.new_zeros((rows, n_ext, *y0.shape)), factors.buffer(rows)]
            with torch.no_grad():  # in place, the loop writes into ``ck`` (_forward_chunk)
                try:
                    out = self._forward(self.method, func, in_place, t, h, y, f, prev,
                                        rejected, nonfinite, trials, ctl, rtol, atol, *ck)
                except Exception:
                    if not in_place or chunks:
                        raise
                    self._writes.failed(func)
                    in_place, rows = False, CHUNK
                    factors = Factors(self.method, func, y0, in_place)
                    continue
            t, h, y, f, prev, rejected, nonfinite, trials, acc, status = out[:10]
            if not in_place:
                ck = [*out[10:], ck[5]]
            n, code = int(acc), int(status)  # the one host sync per chunk
            accepted += n
            if n:
                chunk, ys = self._fill(ck, n, k, along, tau, t, y, d)
                chunks.append(chunk)
                outputs.append(ys)
                k += len(chunk.local)
            if code == DONE:
                return Forward(torch.cat(outputs), chunks, int(trials), accepted)
            if code == FULL:
                continue
            tf, hf = float(t), float(h)
            if code == UNDERFLOW:
                if bool(nonfinite):
                    raise NonFiniteState(tf)
                near = settings.direction * (tf + 1.01 * hf - settings.t_end) >= 0
                h_try = settings.t_end - tf if near else hf
                raise StepSizeUnderflow(tf, h_try, hint=hint(tf, y, h_try))
            raise MaxStepsExceeded(tf, settings.max_steps, hint=hint(tf, y, hf))

    def _fill(self, ck: list[Tensor], n: int, k: int, along: list[float], tau: Tensor,
              t_end: Tensor, y_end: Tensor, direction: float) -> tuple[Chunk, Tensor]:
        """The outputs inside this chunk's steps, from output ``k`` on (see the module
        docstring), and the chunk's record for the reverse sweep."""
        T, H, Y, F, K = (x[:n] for x in ck[:5])
        # the outputs up to the chunk's end (``along``: direction * output times, sorted)
        stop = bisect.bisect_right(along, direction * float(t_end), lo=k)
        q = tau[k:stop]
        keys, queries = (-T, -q) if direction < 0 else (T, q)
        local = (torch.searchsorted(keys.contiguous(), queries.contiguous()) - 1).clamp(min=0)
        t_next = torch.cat([T[1:], t_end.reshape(1)])
        at_end = q == t_next[local]
        hs = H[local]
        thetas = (q - T[local]) / hs
        W = self._weights(thetas, hs)  # (outputs, stages)
        Ko = K.index_select(0, local).reshape(len(local), K.shape[1], -1)
        dense = torch.baddbmm(Y.index_select(0, local).reshape(len(local), 1, -1),
                              W.unsqueeze(1), Ko).reshape(len(local), *Y.shape[1:])
        y_next = torch.cat([Y[1:], y_end.unsqueeze(0)])
        mask = at_end.reshape(-1, *([1] * (Y.ndim - 1)))
        ys = torch.where(mask, y_next[local], dense)
        return Chunk(ck[0], ck[1], ck[2], ck[3], ck[5], n, k, local, at_end, hs, thetas), ys

    def _weights(self, thetas: Tensor, hs: Tensor) -> Tensor:
        """The dense output's weights ``scale B_j(theta)`` per output: ``scale = h`` for
        slopes (Runge–Kutta stages), 1 for increments (Rosenbrock stages U_j)."""
        W = self.interpolant.weights(thetas)
        return W * hs[:, None] if self.interpolant.by_h else W

    def backward(self, func: VectorField, names: Names, params: Params, fw: Forward,
                 grad_ys: Tensor) -> tuple[Tensor, list[Tensor]]:
        """ACA's reverse sweep: the cotangents of ``(y0, params)`` from those of the
        outputs, the first derivative ``f0 = func(t0, y0)`` pulled back as well
        (``grad_ys[0]``, the cotangent of ``y(t0)`` itself, is the caller's)."""
        shape = grad_ys.shape[1:]
        n_ext = self.interpolant.n_vectors
        a_y, a_f = grad_ys.new_zeros(shape), grad_ys.new_zeros(shape)
        spec, flat = pack(params, grad_ys)
        g_total = torch.zeros_like(flat)
        closed = (a_y, g_total)
        for c in reversed(fw.chunks):
            g = grad_ys[c.first: c.first + len(c.local)]
            mask = c.at_end.reshape(-1, *([1] * len(shape)))
            end_g, dense_g = torch.where(mask, g, 0.0), torch.where(mask, 0.0, g)
            size = c.t.shape[0]
            zeros = grad_ys.new_zeros((size, *shape))
            end_cot = zeros.index_add(0, c.local, end_g)
            y_cot = zeros.index_add(0, c.local, dense_g)
            W = self._weights(c.thetas, c.hs)
            W = W.reshape(*W.shape, *([1] * len(shape)))
            k_cot = grad_ys.new_zeros((size, n_ext, *shape)).index_add_(
                0, c.local, W * dense_g.unsqueeze(1))
            last = torch.tensor(c.n - 1, dtype=torch.int64, device=grad_ys.device)
            _, a_y, a_f, g, a_closed, g_closed = self._reverse(
                self.method, func, names, last, a_y, a_f, c.t, c.h, c.y, c.f, c.x, end_cot,
                y_cot, k_cot, spec, flat)
            # with the sweep closed through this chunk's row 0: right for the first chunk
            closed = (a_closed, g_total + g_closed)
            g_total = g_total + g
        return closed[0], list(unpack(closed[1], spec))


_LOOPS: dict[str, CompiledLoop] = {}


def loop_for(method: Method) -> CompiledLoop:
    """The process-wide :class:`CompiledLoop` of ``method`` (compiled on first use)."""
    if method.name not in _LOOPS:
        _LOOPS[method.name] = CompiledLoop(method)
    return _LOOPS[method.name]


def usable(cfg: Config) -> bool:
    """Whether ``cfg`` runs in the compiled loop: a method that declares it
    (``compiled_loop``: adaptive explicit Runge–Kutta, the Rosenbrock methods), the default
    PI controller, adaptive
    steps that interpolate the outputs. Anything else uses the per-step compiled path."""
    return (cfg.method.compiled_loop and type(cfg.controller) is PIController
            and cfg.step_size is None and not cfg.step_to_outputs)


def settings_for(cfg: Config, times: list[float]) -> LoopSettings:
    """The loop settings of a validated configuration (the default PI controller's)."""
    ctrl = cfg.controller
    assert isinstance(ctrl, PIController)
    method = cfg.method
    assert method.error_order is not None
    beta = method.pi_beta if ctrl.beta is None else ctrl.beta
    return LoopSettings(t_end=times[-1], direction=1.0 if times[-1] > times[0] else -1.0,
                        safety=ctrl.safety, ifactor=ctrl.ifactor, dfactor=ctrl.dfactor,
                        beta=beta, max_step=cfg.max_step, max_steps=cfg.max_steps,
                        q=method.error_order + 1)


def start(func: VectorField, y0: Tensor, times: list[float],
          cfg: Config) -> tuple[Tensor, float, int]:
    """``f0 = func(t0, y0)`` and the first step size (as the eager loop chooses it), with
    the evaluations they cost."""
    f0 = func(time_tensor(times[0], y0), y0)
    if not bool(torch.isfinite(f0).all() & torch.isfinite(y0).all()):
        raise NonFiniteState(times[0], "initial state or derivative")
    direction = 1.0 if times[-1] > times[0] else -1.0
    span = abs(times[-1] - times[0])
    nfe = 1
    if cfg.first_step is not None:
        h = direction * min(abs(cfg.first_step), span)
    else:
        h, extra = initial_step(func, cfg.method, times[0], y0, f0, direction, cfg.rtol,
                                cfg.atol, span)
        nfe += extra
    return f0, math.copysign(min(abs(h), cfg.max_step), direction), nfe


def tolerance(value: Tol, like: Tensor) -> Tensor:
    """A tolerance (scalar or per component) as a tensor input of the loop."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def work(method: Method, fw: Forward, nfe0: int) -> Stats:
    """The work counters, counted as the eager loop counts them."""
    nfe = nfe0 + fw.trials * method.nfe_per_step + (0 if method.fsal else fw.accepted)
    return Stats(nfe=nfe, steps=fw.trials, accepted=fw.accepted,
                 rejected=fw.trials - fw.accepted)


def hint_for(func: VectorField, method: Method) -> Hint:
    """The stiffness sentence of a failure (eager, on the failure path only)."""
    return lambda t, y, h: stiffness_hint(func, method, t, y, h)


def run(func: VectorField, y0: Tensor, times: list[float],
        cfg: Config) -> tuple[Forward, Stats, Tensor]:
    """One compiled solve without gradients: the forward record (outputs included), the
    work counters and f0."""
    loop = loop_for(cfg.method)
    with torch.no_grad():
        f0, h0, nfe0 = start(func, y0, times, cfg)
        fw = loop.forward(func, y0, times, f0, h0, settings_for(cfg, times),
                          tolerance(cfg.rtol, y0), tolerance(cfg.atol, y0),
                          hint_for(func, cfg.method))
    return fw, work(cfg.method, fw, nfe0), f0


def integrate_compiled(func: VectorField, y0: Tensor, times: list[float],
                       cfg: Config) -> tuple[Tensor, Stats]:
    """Forward-only compiled solve: the states at ``times`` and the work counters."""
    fw, stats, _ = run(func, y0, times, cfg)
    return fw.ys, stats


__all__ = ["CHUNK", "Chunk", "CompiledLoop", "Forward", "LoopSettings", "field_of",
           "integrate_compiled", "loop_for", "run", "usable"]
