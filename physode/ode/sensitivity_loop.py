"""The staggered RODAS4 sensitivity solve of :mod:`physode.ode.sensitivity_batch` as one
compiled loop: no Python per step.

The eager solve pays the per-operation overhead of PyTorch (~1 µs per operation, ~150
operations per step) on every step, which on a 7-species network is nearly all of its
~1 ms per step. Here the loop is a ``torch._higher_order_ops.while_loop`` compiled with
inductor (C++ wrapper), as :mod:`physode.ode.compiled_loop` does for the plain solve:
every iteration attempts one step of every running sample with the same step, error norm
and controller as the eager loop, so both take the same steps and agree to round-off (the
stage solves use the inverse of ``I / (h gamma) - J`` here, the LU factors there).

A sample whose step lands on one of its stops (an output time or a breakpoint) writes its
state and sensitivities straight into its rows of the outputs, in place: ``while_loop``
allows in-place writes to tensors it does not carry when no gradient is recorded, and a
carried record buffer would be copied on every step. A call returns when every sample is
done or failed, or when the next stop of some sample coincides with its time (a
breakpoint on an output time), which Python records before the loop resumes. So a solve
makes one call, plus one per such breakpoint, and its memory is that of the outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch._higher_order_ops import while_loop as _while_loop

from physode.ode.loop_compile import loop_options
from physode.ode.sensitivity_step import (
    TABLEAUS,
    SensitivityField,
    SensitivityResult,
    _hu_eval,
    _rms,
    _stage_eval,
    _start_eval,
    _step,
    advance,
    next_step_size,
)

RUNNING, DONE, FAILED = 0, 1, 2

run_while: Callable[..., tuple[Tensor, ...]] = _while_loop  # torch leaves it untyped


def _evaluate(field: SensitivityField, which: int, *args: Tensor) -> tuple[Tensor, ...]:
    return (_start_eval, _stage_eval, _hu_eval)[which](field, *args)


def _chunk(field: SensitivityField, method: str, stops: Tensor, out_index: Tensor,
           ctl: Tensor, p: Tensor, dp: Tensor, t: Tensor, h: Tensor, x: Tensor, s: Tensor,
           k: Tensor, steps: Tensor, rejected: Tensor, last_reject: Tensor, status: Tensor,
           xs: Tensor, ss: Tensor) -> tuple[Tensor, ...]:
    """Steps of every running sample until a call ends (module docstring), writing the
    outputs into ``xs`` and ``ss`` in place. ``ctl``: ``[rtol, atol, max_steps,
    error_control]``."""
    B, K = stops.shape
    tab = TABLEAUS[method]
    rows = torch.arange(B)
    evaluate = partial(_evaluate, field)

    def next_stop(k_: Tensor) -> Tensor:
        return stops[rows, k_.clamp(max=K - 1)]

    def cond(t: Tensor, h: Tensor, x: Tensor, s: Tensor, k: Tensor, steps: Tensor,
             rejected: Tensor, last_reject: Tensor, status: Tensor) -> Tensor:
        running = status == RUNNING
        at = running & (next_stop(k) - t <= 1e-13 * t.abs().clamp(min=1.0))
        return running.any() & ~at.any()

    def body(t: Tensor, h: Tensor, x: Tensor, s: Tensor, k: Tensor, steps: Tensor,
             rejected: Tensor, last_reject: Tensor, status: Tensor) -> tuple[Tensor, ...]:
        rtol, atol, max_steps, error_control = ctl.unbind()
        running = status == RUNNING
        stop = next_stop(k)
        hit = h >= stop - t
        h_free = h
        h = torch.where(running, torch.where(hit, stop - t, h), torch.ones_like(h))
        x1, s1, ex, es = _step(evaluate, t, h, x, s, p, dp, tab)
        err = _rms(ex, atol + rtol * torch.maximum(x.abs(), x1.abs()))
        err_s = _rms(es, atol + rtol * torch.maximum(s.abs(), s1.abs()))
        err = torch.where(error_control > 0, torch.maximum(err, err_s), err)
        err = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
        accept = running & (err <= 1.0)
        steps = steps + running.long()
        rejected = rejected + (running & ~accept).long()
        t, x, s = advance(accept, hit, t, h, stop, x, x1, s, s1)
        h_new = next_step_size(h, h_free, err, accept, hit, last_reject, tab)
        h = torch.where(running, h_new, h_free)
        last_reject = torch.where(running, ~accept, last_reject)
        landed = accept & hit
        o = out_index[rows, k.clamp(max=K - 1)]
        write = landed & (o >= 0)  # an output, not a breakpoint: into its row, in place
        at = (rows, o.clamp(min=0))
        xs.index_put_(at, torch.where(write[:, None], x, xs[at]))
        ss.index_put_(at, torch.where(write[:, None, None], s, ss[at]))
        k = k + landed.long()
        done = landed & ((k >= K) | ~torch.isfinite(next_stop(k)))
        dead = running & ~done & ((h < 1e-14 * t.abs().clamp(min=1.0))
                                  | (steps >= max_steps))
        status = torch.where(done, torch.full_like(status, DONE),
                             torch.where(dead, torch.full_like(status, FAILED), status))
        return t, h, x, s, k, steps, rejected, last_reject, status

    return tuple(run_while(cond, body, (t, h, x, s, k, steps, rejected, last_reject,
                                        status)))


_COMPILED: dict[str, Any] = {}


def _compiled_chunk() -> Callable[..., tuple[Tensor, ...]]:
    fn = _COMPILED.get("chunk")
    if fn is None:
        fn = _COMPILED["chunk"] = torch.compile(_chunk, fullgraph=True, dynamic=False,
                                                options=loop_options())
    return fn


def solve_compiled(field: SensitivityField, x0: Tensor, s0: Tensor, p: Tensor, dp: Tensor,
                   stops: Tensor, out_index: Tensor, n_out: int, t0: float, h0: Tensor,
                   rtol: float, atol: float, max_steps: int,
                   error_control: bool, method: str = "rodas4") -> SensitivityResult:
    """The loop of :func:`physode.ode.sensitivity_batch.solve_sensitivities` (which checks
    the arguments and computes the stops and first steps) for a field with closed-form
    blocks."""
    B, n = x0.shape
    q = s0.shape[2]
    K = stops.shape[1]
    xs = x0.new_full((B, n_out, n), math.nan)
    ss = x0.new_full((B, n_out, n, q), math.nan)
    t = x0.new_full((B,), t0)
    x, s, h = (v.clone(memory_format=torch.contiguous_format) for v in (x0, s0, h0))
    p, dp = p.contiguous(), dp.contiguous()
    k = torch.zeros(B, dtype=torch.long)
    steps = torch.zeros(B, dtype=torch.long)
    rejected = torch.zeros(B, dtype=torch.long)
    last_reject = torch.zeros(B, dtype=torch.bool)
    status = torch.full((B,), RUNNING, dtype=torch.long)
    ctl = torch.tensor([rtol, atol, float(max_steps), float(error_control)],
                       dtype=x0.dtype)
    rows = torch.arange(B)
    chunk = _compiled_chunk()
    for v in (stops, out_index, xs, ss):  # one graph for every number of stops and outputs
        torch._dynamo.mark_dynamic(v, 1)
    while True:
        # stops at the current time (outputs at t0, a breakpoint on an output): record them
        while True:
            stop = stops[rows, k.clamp(max=K - 1)]
            at = (status == RUNNING) & (stop - t <= 1e-13 * t.abs().clamp(min=1.0))
            if not bool(at.any()):
                break
            o = out_index[rows, k.clamp(max=K - 1)]
            rec = at & (o >= 0)
            xs[rows[rec], o[rec]] = x[rec]
            ss[rows[rec], o[rec]] = s[rec]
            k = k + at.long()
            stop = stops[rows, k.clamp(max=K - 1)]
            finished = at & ((k >= K) | ~torch.isfinite(stop))
            status = torch.where(finished, torch.full_like(status, DONE), status)
        if not bool((status == RUNNING).any()):
            break
        with torch.no_grad():  # the loop writes into xs and ss in place (module docstring)
            (t, h, x, s, k, steps, rejected, last_reject,
             status) = chunk(field, method, stops, out_index, ctl, p, dp, t, h, x, s, k,
                             steps, rejected, last_reject, status, xs, ss)
    return SensitivityResult(xs, ss, status == DONE, steps, rejected)


__all__ = ["solve_compiled"]
