"""The eager per-sample loop: B solves stepped together, each with its own step size.

The reference for ``per_sample=True`` (and its path when it is not compiled). Every
iteration makes one trial for every running sample at once — ``func`` called on the whole
batch, each sample with its own time and step size — and each sample's controller accepts
or rejects its own row (:mod:`physode.ode.batch_parts`). A sample that has reached its last
time stops: its row takes a zero step (finite, never counted) while the others go on, so a
stiff sample no longer drags the batch to its step size. The semantics per sample are those
of :func:`physode.ode.loop.integrate` with the default PI controller: the same starting
step, landing rule, underflow test and dense outputs, so sample b takes the steps a solve of
sample b alone takes (up to round-off in the error norm).

With grad enabled the loop is the ``direct`` gradient: rejected rows are masked out of the
graph with ``torch.where``; should a rejected trial have overflowed, the step is redone
with a zero step on the rejected rows, so no NaN reaches the backward pass (0 * inf).
Given a ``record`` list it keeps one :class:`BatchCheckpoint` per iteration that accepted
something: what ACA's reverse sweep (:mod:`physode.ode.gradients.batch_aca`) needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from physode.ode.batch_parts import (
    BatchStats,
    BatchTimes,
    Control,
    check_start,
    column,
    failure,
    first_true,
    initial_steps,
    landing,
    pi_control,
    row_field,
    sample_error_norm,
    sample_stats,
    tiny_step,
)
from physode.ode.loop import Config, check_derivative
from physode.ode.methods.base import Method
from physode.ode.methods.step import Step, VectorField


@dataclass
class Outputs:
    """The outputs one batched step produced, ``(B, M)`` each: output index, whether the
    entry is one (``valid``), whether it is the step's end state (``at_end``) and its
    theta in the step (0 where not interpolated)."""

    index: Tensor
    valid: Tensor
    at_end: Tensor
    thetas: Tensor


@dataclass
class BatchCheckpoint:
    """One iteration of the batched loop: start times ``t``, end times ``t1``, step sizes
    ``h`` (0 in rows that did not accept), states and derivatives at the start, the rows
    that accepted, and the outputs the accepted steps produced."""

    t: Tensor
    t1: Tensor
    h: Tensor
    y: Tensor
    f: Tensor
    accepted: Tensor
    outputs: Outputs | None


def dense_states(method: Method, y: Tensor, h: Tensor, thetas: Tensor,
                 stages: Tensor) -> Tensor:
    """``y_b + h_b sum_j B_j(theta_bm) K_jb`` for every sample b and output m, shape
    ``(B, M, *state)`` (``stages``: ``(S, B, *state)``; Hairer, Nørsett & Wanner I, II.6)."""
    W = dense_weights(method, h, thetas)
    out: Tensor = y.unsqueeze(1) + torch.einsum("bms,sb...->bm...", W, stages)
    return out


def dense_weights(method: Method, h: Tensor, thetas: Tensor) -> Tensor:
    """``h B_j(theta_bm)``, shape ``(B, M, S)``: the dense output's weights per sample and
    output (``h``: one step size per sample ``(B,)``, or per output ``(B, M)``)."""
    interp = method.interpolant
    assert interp is not None and interp.by_h
    b, m = thetas.shape
    return interp.weights(thetas.reshape(-1)).reshape(b, m, -1) * h.reshape(b, -1, 1)


class _Outputs:
    """The outputs gathered so far: flat indices into ``(n_out * B)`` and their states."""

    def __init__(self, bt: BatchTimes, y0: Tensor) -> None:
        self.bt = bt
        self.tau_rows = bt.tau.T.contiguous()  # (B, n_out)
        self.rows = torch.arange(y0.shape[0], device=y0.device)
        self.index = [self.rows]
        self.values = [y0]

    def step(self, method: Method, field: VectorField, k: Tensor, ok: Tensor, t: Tensor,
             h: Tensor, t_new: Tensor, y: Tensor, f1: Tensor,
             step: Step) -> tuple[Tensor, Outputs | None, Tensor, int]:
        """Place the outputs in ``(t, t_new]`` of the accepted rows. Returns the next output
        index per sample, the outputs' record, the rows that interpolated, and the
        evaluations the extended stages cost."""
        bt = self.bt
        n_out, B = bt.n_out, y.shape[0]
        ends = torch.searchsorted(bt.keys, (bt.direction * t_new)[:, None], right=True)[:, 0]
        k_end = torch.where(ok, ends, k)
        m = int((k_end - k).max())
        none = torch.zeros_like(ok)
        if m == 0:
            return k_end, None, none, 0
        ar = torch.arange(m, device=y.device)
        valid = ar < (k_end - k)[:, None]
        index = (k[:, None] + ar).clamp(max=n_out - 1)
        q = self.tau_rows.gather(1, index)
        at_end = valid & (q == t_new[:, None])
        inner = valid & ~at_end
        thetas = torch.where(inner, (q - t[:, None]) / torch.where(ok, h, 1.0)[:, None], 0.0)
        vals = step.y1.unsqueeze(1).expand(B, m, *y.shape[1:])
        calls = 0
        if bool(inner.any()):
            ext = method.extended_stages(field, column(t, y), column(h, y), y, step.ks, f1)
            calls = method.nfe_dense
            dense = dense_states(method, y, h, thetas, torch.stack(ext))
            end_mask = at_end.reshape(B, m, *([1] * (y.ndim - 1)))
            vals = torch.where(end_mask, step.y1.unsqueeze(1), dense)
        bi, mi = valid.nonzero(as_tuple=True)
        self.index.append(index[bi, mi] * B + bi)
        self.values.append(vals[bi, mi])
        return k_end, Outputs(index, valid, at_end, thetas), inner.any(1), calls

    def stacked(self, y0: Tensor) -> Tensor:
        """All outputs, shape ``(n_out, B, *state)`` (one scatter, differentiable)."""
        B = y0.shape[0]
        values = torch.cat(self.values)
        flat = values.new_zeros((self.bt.n_out * B, *y0.shape[1:]))
        out = flat.index_put((torch.cat(self.index),), values)
        return out.reshape(self.bt.n_out, B, *y0.shape[1:])


def _finite(step: Step) -> bool:
    return bool(torch.isfinite(step.y1).all() & torch.isfinite(torch.stack(step.ks)).all())


def integrate_batch(func: VectorField, y0: Tensor, bt: BatchTimes, cfg: Config,
                    record: list[BatchCheckpoint] | None = None,
                    f0: Tensor | None = None) -> tuple[Tensor, BatchStats]:
    """Solve every sample from ``bt.tau[0]`` through its output times.

    Returns the states at the output times, shape ``(n_out, B, *state)``, and the
    counters. Runs with whatever grad mode the caller set; the controllers never record a
    graph. Errors name the failing sample.
    """
    method = cfg.method
    field = row_field(func)
    B, n_out = y0.shape[0], bt.n_out
    d, t_end = bt.direction, bt.tau[-1]
    t = bt.tau[0].clone()
    calls = 0
    if f0 is None:
        f = check_derivative(field(column(t, y0), y0), y0, float(t[0]))
        calls += 1
    else:
        f = f0
    check_start(y0, f, t)
    control = Control.of(cfg)
    ctl = control.tensor(y0)
    h = initial_steps(field, method, t, y0, f, d, (t_end - t).abs(), cfg)
    nfe0 = 1 if cfg.first_step is not None else 2
    calls += nfe0 - 1
    long: dict[str, Any] = {"dtype": torch.int64, "device": y0.device}
    prev = torch.full_like(t, 1e-4)
    rejected = torch.zeros(B, dtype=torch.bool, device=y0.device)
    nonfinite, done, dense_rows = rejected.clone(), rejected.clone(), torch.zeros(B, **long)
    trials, accepted, k = torch.zeros(B, **long), torch.zeros(B, **long), torch.ones(B, **long)
    outputs = _Outputs(bt, y0)
    y = y0
    while n_out > 1:
        active = ~done
        if not bool(active.any()):
            break
        near, h_try, t_new = landing(t, h, t_end, d)
        over = first_true(active & (trials >= control.max_steps))
        if over is not None:
            raise failure("max_steps", over, func, method, float(t[over]), y[over].detach(),
                          float(h[over]), False, control.max_steps)
        tiny = first_true(active & tiny_step(h_try, t))
        if tiny is not None:
            raise failure("underflow", tiny, func, method, float(t[tiny]), y[tiny].detach(),
                          float(h_try[tiny]), bool(nonfinite[tiny]), control.max_steps)
        h_used = torch.where(active, h_try, 0.0)
        step = method.step(field, column(t, y0), column(h_used, y0), y, f)
        calls += method.nfe_per_step
        with torch.no_grad():
            ratio = sample_error_norm(step, y, cfg.rtol, cfg.atol)
            ok, h_next = pi_control(ctl, h_try, ratio, prev, rejected, d)
        ok &= active
        trials += active.long()
        nonfinite = torch.where(active, ~torch.isfinite(ratio), nonfinite)
        rejected = torch.where(active, ~ok, rejected)
        prev = torch.where(ok, torch.clamp(ratio, min=1e-4), prev)
        h = torch.where(active, h_next, h)
        if not bool(ok.any()):
            continue
        accepted += ok.long()
        if torch.is_grad_enabled() and not _finite(step):  # keep NaN out of the backward
            h_used = torch.where(ok, h_try, 0.0)
            step = method.step(field, column(t, y0), column(h_used, y0), y, f)
            calls += method.nfe_per_step
        t1 = torch.where(ok, t_new, t + h_used)
        f1 = method.f1(field, column(t1, y0), step)
        if f1 is None:
            f1 = field(column(t1, y0), step.y1)
            calls += 1
        k, outs, interpolated, extra = outputs.step(method, field, k, ok, t, h_used, t_new, y,
                                                    f1, step)
        dense_rows += interpolated.long()
        calls += extra
        if record is not None:
            record.append(BatchCheckpoint(t, t1, torch.where(ok, h_try, 0.0), y, f, ok, outs))
        done = done | (ok & near)
        okc = column(ok, y0)
        t = torch.where(ok, t_new, t)
        y = torch.where(okc, step.y1, y)
        f = torch.where(okc, f1, f)
    stats = BatchStats.of(sample_stats(method, nfe0, trials.tolist(), accepted.tolist(),
                                       dense_rows.tolist()), calls)
    return outputs.stacked(y0), stats


__all__ = ["BatchCheckpoint", "Outputs", "dense_states", "dense_weights", "integrate_batch"]
