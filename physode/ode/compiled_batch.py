"""Per-sample solves as compiled loops: every sample its own step size, no Python per step.

The batched counterpart of :mod:`physode.ode.compiled_loop`. The forward loop is one
``torch._higher_order_ops.while_loop`` compiled with inductor (C++ wrapper) whose carry
holds per-sample tensors of shape ``(B,)`` — time, step size, previous error ratio,
rejection and non-finite flags, trial and accepted counts, status — and the batch's state
and FSAL derivative. Each iteration makes one trial for the whole batch (``func`` on
``(B, *state)``), and every running sample accepts or rejects its own row with the PI
controller (:func:`physode.ode.batch_parts.pi_control`); finished samples take zero steps.
Sample b's accepted steps go to row ``acc_b`` of its checkpoint buffers ``(B, CHUNK, ...)``
(start and end time, h, y, f, and the stages), so the buffers hold per-sample counts of
accepted steps, and a chunk ends when some sample has filled its ``CHUNK`` rows, when all are
done, or when one fails. Between chunks, the outputs that fall into each sample's steps
are filled by the dense output, without an evaluation of the vector field (each output's
step found by a search over that sample's step start times), as in the unbatched loop.

ACA (Zhuang et al., ICML 2020, arXiv:2006.02493): the reverse sweep is a second compiled
loop over a chunk's rows, from the largest count down to 0; row i is sample b's step i where
``i < acc_b``, rebuilt for the batch at once and pulled back with ``torch.func.vjp``;
samples without a step at row i rebuild a zero step from a finite state with zero
cotangents (exactly no contribution) and keep their cotangents. The outputs' cotangents
reach the steps analytically through the linear dense output. The step, the error norm and
the controller are those of the eager batched loop (:mod:`physode.ode.batch_loop`), which
is the reference this module is tested against.
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
from physode.ode.compiled_loop import (
    CHUNK,
    DONE,
    MAX_STEPS,
    RUNNING,
    UNDERFLOW,
    Names,
    Params,
    _end_derivative,
    _stages,
    field_of,
    run_while,
    tolerance,
)
from physode.ode.loop import Config, check_derivative
from physode.ode.loop_buffers import Writes
from physode.ode.loop_compile import loop_options
from physode.ode.methods.base import Method
from physode.ode.methods.dense import powers
from physode.ode.methods.step import VectorField


def table_row(P: Tensor, y: Tensor, stages: Tensor) -> Tensor:
    """A step's dense-output row ``(y, C_1, ..., C_degree)``, ``C_p = sum_j P[j, p] K_j``,
    shape ``(B, 1 + degree, D)``: the output at theta is ``y + sum_p h theta^p C_p``
    (Hairer, Nørsett & Wanner I, II.6), one gathered row per output."""
    B = y.shape[0]
    coef = torch.einsum("sp,sbd->bpd", P, stages.reshape(stages.shape[0], B, -1))
    return torch.cat([y.reshape(B, 1, -1), coef], 1)


def _forward_chunk(method: Method, func: VectorField, in_place: bool, t: Tensor, h: Tensor,
                   y: Tensor, f: Tensor, prev: Tensor, rejected: Tensor, nonfinite: Tensor,
                   trials: Tensor, acc: Tensor, status: Tensor, t_end: Tensor, d: Tensor,
                   ctl: Tensor, rtol: Tensor, atol: Tensor, P: Tensor, ck_t: Tensor,
                   ck_t1: Tensor, ck_h: Tensor, ck_f: Tensor,
                   ck_tab: Tensor) -> tuple[Tensor, ...]:
    """Batched trials until a sample has ``CHUNK`` accepted steps, every sample is done,
    or one fails (underflow, ``max_steps``). ``in_place``: the checkpoints are written into
    the ``ck_*`` buffers in place (the loop runs under ``no_grad``); else the buffers are
    carried and returned after the carry, as for a field whose step runs ``torch.func``
    transforms (:class:`physode.ode.loop_buffers.Writes`)."""
    chunk = ck_t.shape[1]
    rows = torch.arange(y.shape[0], device=y.device)
    field = row_field(func)
    max_trials = ctl[6].long()

    def cond(*carry: Tensor) -> Tensor:
        status, acc = carry[9], carry[8]
        return ((status == RUNNING).any() & ~(status >= UNDERFLOW).any()
                & (acc < chunk).all())

    def body(t: Tensor, h: Tensor, y: Tensor, f: Tensor, prev: Tensor, rejected: Tensor,
             nonfinite: Tensor, trials: Tensor, acc: Tensor, status: Tensor,
             *carried: Tensor) -> tuple[Tensor, ...]:
        active = status == RUNNING
        near, h_try, t_new = landing(t, h, t_end, d)
        tiny = active & tiny_step(h_try, t)
        live = active & ~tiny
        h_used = torch.where(live, h_try, 0.0)
        step = method.step(field, column(t, y), column(h_used, y), y, f)
        ratio = sample_error_norm(step, y, rtol, atol)
        ok, h_next = pi_control(ctl, h_try, ratio, prev, rejected, d)
        ok = ok & live
        t1 = torch.where(ok, t_new, t + h_used)
        f1 = _end_derivative(method, field, column(t1, y), step.y1, step.ks)
        stages = _stages(method, field, column(t, y), column(h_used, y), y, step.ks, f1)
        # the buffers are not carried but written in place: a carried buffer is copied
        # every iteration (measured: the cost grew with the buffer, ~1 ms per trial for a
        # batch of 64 three-body systems), an in-place write costs only its row
        slot = (rows, acc.clamp(max=chunk - 1))
        values = (t, t1, h_used, f, table_row(P, y, stages))
        if in_place:
            for buf, value in zip((ck_t, ck_t1, ck_h, ck_f, ck_tab), values):
                buf.index_put_(slot, value)
        else:
            carried = tuple(buf.index_put(slot, v) for buf, v in zip(carried, values))
        trials = trials + live.long()
        acc = acc + ok.long()
        status = torch.where(tiny, UNDERFLOW, status)
        status = torch.where(ok & near, DONE, status)
        status = torch.where((status == RUNNING) & (trials >= max_trials), MAX_STEPS, status)
        okc = column(ok, y)
        return (torch.where(ok, t_new, t), torch.where(live, h_next, h),
                torch.where(okc, step.y1, y), torch.where(okc, f1, f),
                torch.where(ok, torch.clamp(ratio, min=1e-4), prev),
                torch.where(live, ~ok, rejected),
                torch.where(live, ~torch.isfinite(ratio), nonfinite), trials, acc, status,
                *carried)

    bufs = () if in_place else (ck_t, ck_t1, ck_h, ck_f, ck_tab)
    out: tuple[Tensor, ...] = run_while(
        cond, body, (t, h, y, f, prev, rejected, nonfinite, trials, acc, status, *bufs))
    return out


def _reverse_chunk(method: Method, func: VectorField, names: Names, last: Tensor,
                   acc: Tensor, a_y: Tensor, a_f: Tensor, ck_t: Tensor, ck_t1: Tensor,
                   ck_h: Tensor, ck_f: Tensor, ck_tab: Tensor, y_safe: Tensor,
                   f_safe: Tensor, P: Tensor, end_cot: Tensor, tab_cot: Tensor,
                   *params: Tensor) -> tuple[Tensor, ...]:
    """ACA's reverse sweep over one chunk, row ``last`` down to 0 (row i: every sample's
    step i where it has one)."""
    g0 = tuple(torch.zeros_like(p) for p in params)

    def cond(i: Tensor, *rest: Tensor) -> Tensor:
        return i >= 0

    def body(i: Tensor, a_y: Tensor, a_f: Tensor, *g: Tensor) -> tuple[Tensor, ...]:
        row = i.reshape(1)

        def at(b: Tensor) -> Tensor:
            return b.index_select(1, row).squeeze(1)

        act = i < acc
        actc = column(act, a_y)
        t, h = at(ck_t), torch.where(act, at(ck_h), 0.0)
        t1 = torch.where(act, at(ck_t1), t)
        y = torch.where(actc, at(ck_tab)[:, 0].reshape(y_safe.shape), y_safe)
        f = torch.where(actc, at(ck_f), f_safe)
        cot = at(tab_cot)  # (B, 1 + degree, D): of y through the outputs, and of C_p
        a_y = a_y + at(end_cot)

        def rebuild(y_: Tensor, f_: Tensor, *ps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            field = row_field(field_of(func, names, ps))
            tc, hc = column(t, y_), column(h, y_)
            step = method.step(field, tc, hc, y_, f_)
            f1 = _end_derivative(method, field, column(t1, y_), step.y1, step.ks)
            stages = _stages(method, field, tc, hc, y_, step.ks, f1)
            return step.y1, f1, table_row(P, y_, stages)[:, 1:]

        pull = torch.func.vjp(rebuild, y, f, *params)[1]
        gy, gf, *gp = pull((torch.where(actc, a_y, 0.0), torch.where(actc, a_f, 0.0),
                            cot[:, 1:]))
        y_cot = cot[:, 0].reshape(a_y.shape)
        return (i - 1, torch.where(actc, gy + y_cot, a_y), torch.where(actc, gf, a_f),
                *(a + b for a, b in zip(g, gp)))

    out: tuple[Tensor, ...] = run_while(cond, body, (last, a_y, a_f, *g0))
    return out


@dataclass
class BatchChunk:
    """One forward call: checkpoints ``(B, CHUNK, ...)`` (rows ``< acc[b]`` are sample b's
    steps: t, t + h, h, f, and the dense-output row ``(y, C_1, ...)`` of :func:`table_row`),
    the state and derivative it started from (finite stand-ins for the rows
    without a step), and its outputs, sorted by sample and time: their flat index
    ``k * B + b`` into the outputs, the flat row ``b * CHUNK + i`` of the step each lies in,
    whether it ends that step, and its dense output's weights ``(1, h theta, ...)``."""

    t: Tensor
    t1: Tensor
    h: Tensor
    f: Tensor
    tab: Tensor
    acc: Tensor
    y_in: Tensor
    f_in: Tensor
    outputs: Tensor | None = None
    rows: Tensor | None = None
    at_end: Tensor | None = None
    weights: Tensor | None = None


@dataclass
class BatchForward:
    """A compiled per-sample forward solve: outputs, chunks, per-sample counts."""

    ys: Tensor
    chunks: list[BatchChunk]
    trials: list[int]
    accepted: list[int]


class BatchLoop:
    """The compiled per-sample forward and reverse loops of one method, process-wide."""

    def __init__(self, method: Method) -> None:
        self.method = method
        loops = loop_options(pointwise_cat=False)
        self._forward = torch.compile(_forward_chunk, fullgraph=True, dynamic=False,
                                      options=loops)
        self._writes = Writes(method)  # in place or carried, per field
        self._reverse = torch.compile(_reverse_chunk, fullgraph=True, dynamic=False,
                                      options=loops)

    def forward(self, func: VectorField, y0: Tensor, bt: BatchTimes, f0: Tensor, h0: Tensor,
                control: Control, rtol: Tensor, atol: Tensor) -> BatchForward:
        """All trials of every sample and the states at the output times; errors as the
        eager batched loop raises them (naming the sample)."""
        B, shape = y0.shape[0], y0.shape[1:]
        P = self._matrix(y0)
        width = 1 + P.shape[1]
        ctl = control.tensor(y0)
        t, t_end, d = bt.tau[0].clone(), bt.tau[-1].contiguous(), bt.direction
        long: dict[str, Any] = {"dtype": torch.int64, "device": y0.device}
        prev = torch.full_like(t, 1e-4)
        rejected = torch.zeros(B, dtype=torch.bool, device=y0.device)
        nonfinite = rejected.clone()
        trials, status = torch.zeros(B, **long), torch.full((B,), RUNNING, **long)
        h, y, f = h0, y0, f0
        ys = y0.new_empty((bt.n_out, B, *shape))  # every output is written once
        ys[0] = y0
        k = torch.ones(B, **long)
        chunks: list[BatchChunk] = []
        accepted = torch.zeros(B, **long)
        in_place = self._writes.in_place(func)
        while True:
            # times and steps zeroed (rows past a sample's count are rebuilt as zero steps
            # at finite times), the rest is only read below each sample's count
            bufs: tuple[Tensor, ...] = (
                    y0.new_zeros((B, CHUNK)), y0.new_zeros((B, CHUNK)), y0.new_zeros((B, CHUNK)),
                    y0.new_empty((B, CHUNK, *shape)),
                    y0.new_empty((B, CHUNK, width, y0[0].numel())))
            y_in, f_in = y, f
            args = (t, h, y, f, prev, rejected, nonfinite, trials, torch.zeros(B, **long),
                    status, t_end, d, ctl, rtol, atol, P, *bufs)
            try:
                out = self._forward(self.method, func, in_place, *args)
            except Exception:
                if not in_place or chunks:
                    raise
                self._writes.failed(func)
                in_place = False
                out = self._forward(self.method, func, in_place, *args)
            t, h, y, f, prev, rejected, nonfinite, trials, acc, status = out[:10]
            if not in_place:
                bufs = tuple(out[10:])
            accepted += acc  # the buffers were written by the loop
            ck_t, ck_t1, ck_h, ck_f, ck_tab = bufs
            chunk = BatchChunk(ck_t, ck_t1, ck_h, ck_f, ck_tab, acc=acc, y_in=y_in, f_in=f_in)
            k = self._fill(chunk, k, bt, t, y, ys)
            chunks.append(chunk)
            codes = status.tolist()  # the one host sync per chunk
            if all(c == DONE for c in codes):
                return BatchForward(ys, chunks, trials.tolist(), accepted.tolist())
            bad = first_true(status >= UNDERFLOW)
            if bad is not None:
                tb, hb = float(t[bad]), float(h[bad])
                if codes[bad] == UNDERFLOW:
                    near = float(d[bad]) * (tb + 1.01 * hb - float(t_end[bad])) >= 0
                    h_try = float(t_end[bad]) - tb if near else hb
                    raise failure("underflow", bad, func, self.method, tb, y[bad], h_try,
                                  bool(nonfinite[bad]), control.max_steps)
                raise failure("max_steps", bad, func, self.method, tb, y[bad], hb, False,
                              control.max_steps)

    def _fill(self, c: BatchChunk, k: Tensor, bt: BatchTimes, t_end: Tensor,
              y_end: Tensor, ys: Tensor) -> Tensor:
        """Write the outputs inside this chunk's steps into ``ys`` and note them on ``c``
        (see the module docstring); returns the next output index per sample.

        The dense output ``y + h sum_j B_j(theta) K_j`` with ``B_j(theta) = sum_p P[j, p]
        theta^(p+1)`` is evaluated as ``y + sum_p h theta^(p+1) C_p`` over the per-step rows
        ``(y, C_1, ...)`` the loop wrote (:func:`table_row`), gathered and summed for all
        outputs by one ``embedding_bag``: a per-output gather of the stages by advanced
        indexing and a batch of tiny matrix products cost several times more (measured,
        64 samples x 1000 outputs)."""
        B, n_out = ys.shape[1], bt.n_out
        d = bt.direction
        stop = torch.searchsorted(bt.keys, (d * t_end)[:, None], right=True)[:, 0]
        counts = stop - k
        m = int(counts.max())
        if m == 0:
            return stop
        ar = torch.arange(m, device=k.device)
        valid = ar < counts[:, None]
        index = (k[:, None] + ar).clamp(max=n_out - 1)
        q = bt.tau.T.gather(1, index)
        used = torch.arange(CHUNK, device=k.device) < c.acc[:, None]
        keys = torch.where(used, d[:, None] * c.t, torch.inf)
        local = (torch.searchsorted(keys, d[:, None] * q) - 1).clamp(min=0)
        at_end = valid & (q == c.t1.gather(1, local))
        hs = c.h.gather(1, local)
        inner = valid & ~at_end
        thetas = torch.where(inner, (q - c.t.gather(1, local)) / torch.where(inner, hs, 1.0),
                             0.0)
        rows = (torch.arange(B, device=k.device)[:, None] * CHUNK + local).reshape(-1)
        weights = self._weights(hs, thetas).reshape(B * m, -1)
        width = weights.shape[1]
        table = c.tab.reshape(B * CHUNK * width, -1)
        vals = torch.nn.functional.embedding_bag(  # one fused gather and weighted sum
            rows[:, None] * width + torch.arange(width, device=k.device), table,
            per_sample_weights=weights, mode="sum")
        ends = torch.nonzero(at_end.reshape(-1))[:, 0]  # an output a step ends on: its y1
        if ends.numel():
            nxt = rows[ends] + 1
            has_next = (local.reshape(-1)[ends] + 1 < c.acc.repeat_interleave(m)[ends])
            y_next = torch.where(has_next[:, None],
                                 table.index_select(0, nxt.clamp(max=B * CHUNK - 1) * width),
                                 y_end.reshape(B, -1).index_select(0, ends // m))
            vals[ends] = y_next
        keep = torch.nonzero(valid.reshape(-1))[:, 0]
        out_rows = (index * B + torch.arange(B, device=k.device)[:, None]).reshape(-1)[keep]
        ys.view(n_out * B, -1).index_copy_(0, out_rows, vals[keep])
        c.outputs, c.rows, c.at_end = out_rows, rows[keep], at_end.reshape(-1)[keep]
        c.weights = weights[keep]
        return stop

    def _weights(self, hs: Tensor, thetas: Tensor) -> Tensor:
        """``(1, h theta, h theta^2, ...)`` per output, shape ``(B, M, 1 + degree)``."""
        degree = self.method.interpolant.P.shape[1]  # type: ignore[union-attr]
        scaled = powers(thetas, degree) * hs[..., None]
        return torch.cat([torch.ones_like(hs)[..., None], scaled], -1)

    def _matrix(self, like: Tensor) -> Tensor:
        """The interpolant's ``P`` (stages x degree) in ``like``'s dtype and device."""
        interp = self.method.interpolant
        assert interp is not None
        return interp.matrix(like.dtype, like.device)

    @staticmethod
    def _spread(rows: Tensor, weights: Tensor, g: Tensor, n: int) -> Tensor:
        """The transpose of the dense output's gather: ``out[r, p] = sum over the outputs o
        in step r of weights[o, p] g[o]``, shape ``(n * (1 + degree), D)``, as one
        ``embedding_bag`` whose bags are the steps (the outputs come sorted by step)."""
        width = weights.shape[1]
        counts = torch.bincount(rows, minlength=n)
        starts = torch.cumsum(counts, 0) - counts
        members = torch.arange(rows.shape[0], device=rows.device)
        offsets = (starts + rows.shape[0] * torch.arange(width, device=rows.device)[:, None])
        out = torch.nn.functional.embedding_bag(
            members.repeat(width), g, offsets.reshape(-1),
            per_sample_weights=weights.T.reshape(-1), mode="sum")  # (width * n, D), p-major
        return out.reshape(width, n, -1).transpose(0, 1).reshape(n * width, -1)

    def backward(self, func: VectorField, names: Names, params: Params, fw: BatchForward,
                 grad_ys: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """ACA's reverse sweep: the cotangents of ``(y0, f0, params)`` from those of the
        outputs (``grad_ys[0]`` is the caller's). The outputs' cotangents reach their steps
        by the transpose of :meth:`_fill`'s dense output (:meth:`_spread`) onto the rows
        ``(y, C_1, ...)``; the rebuilt step maps the coefficients' cotangents back through
        :func:`table_row`."""
        B, shape = grad_ys.shape[1], grad_ys.shape[2:]
        n = B * CHUNK
        a_y, a_f = grad_ys.new_zeros((B, *shape)), grad_ys.new_zeros((B, *shape))
        g_total = [torch.zeros_like(p) for p in params]
        P = self._matrix(grad_ys)
        degree = P.shape[1]
        for c in reversed(fw.chunks):
            end_cot = grad_ys.new_zeros((n, *shape))
            table_cot = grad_ys.new_zeros((n * (1 + degree), grad_ys[0, 0].numel()))
            if c.outputs is not None:
                assert c.rows is not None and c.at_end is not None and c.weights is not None
                g = grad_ys.reshape(-1, grad_ys[0, 0].numel())
                g = g.index_select(0, c.outputs)  # (outputs, D)
                ends = torch.nonzero(c.at_end)[:, 0]
                end_cot.view(n, -1).index_add_(0, c.rows[ends], g[ends])
                dense_g = torch.where(c.at_end[:, None], 0.0, g)
                table_cot = self._spread(c.rows, c.weights, dense_g, n)
            last = (c.acc.max() - 1).reshape(())
            _, a_y, a_f, *gp = self._reverse(self.method, func, names, last, c.acc, a_y, a_f,
                                             c.t, c.t1, c.h, c.f, c.tab, c.y_in, c.f_in, P,
                                             end_cot.reshape(B, CHUNK, *shape),
                                             table_cot.reshape(B, CHUNK, 1 + degree, -1),
                                             *params)
            g_total = [a + b for a, b in zip(g_total, gp)]
        return a_y, a_f, g_total


_LOOPS: dict[str, BatchLoop] = {}


def batch_loop_for(method: Method) -> BatchLoop:
    """The process-wide :class:`BatchLoop` of ``method`` (compiled on first use)."""
    if method.name not in _LOOPS:
        _LOOPS[method.name] = BatchLoop(method)
    return _LOOPS[method.name]


def run_batch(func: VectorField, y0: Tensor, bt: BatchTimes,
              cfg: Config) -> tuple[BatchForward, BatchStats, Tensor]:
    """One compiled per-sample solve without gradients: the forward record (outputs
    included), the counters and f0."""
    loop = batch_loop_for(cfg.method)
    y0 = y0.contiguous()  # the loop's carry keeps its layout (an expanded y0 has stride 0)
    with torch.no_grad():
        t0 = bt.tau[0]
        field = row_field(func)
        f0 = check_derivative(field(column(t0, y0), y0), y0, float(t0[0]))
        check_start(y0, f0, t0)
        h0 = initial_steps(field, cfg.method, t0, y0, f0, bt.direction,
                           (bt.tau[-1] - t0).abs(), cfg)
        control = Control.of(cfg)
        fw = loop.forward(func, y0, bt, f0.contiguous(), h0, control, tolerance(cfg.rtol, y0),
                          tolerance(cfg.atol, y0))
    nfe0 = 1 if cfg.first_step is not None else 2
    samples = sample_stats(cfg.method, nfe0, fw.trials, fw.accepted)
    # every sample runs from the first iteration until it is done: iterations = max trials
    per_trial = cfg.method.nfe_per_step + (0 if cfg.method.fsal else 1)
    calls = nfe0 + max(fw.trials, default=0) * per_trial
    return fw, BatchStats.of(samples, calls), f0


def integrate_batch_compiled(func: VectorField, y0: Tensor, bt: BatchTimes,
                             cfg: Config) -> tuple[Tensor, BatchStats]:
    """Forward-only compiled per-sample solve: the states ``(n_out, B, *state)`` and the
    counters."""
    fw, stats, _ = run_batch(func, y0, bt, cfg)
    return fw.ys, stats


__all__ = ["BatchChunk", "BatchForward", "BatchLoop", "batch_loop_for",
           "integrate_batch_compiled", "run_batch"]
