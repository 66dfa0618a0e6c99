"""Per-sample solving's vocabulary: batch times, per-sample counters, norms, controller.

``per_sample=True`` solves B independent problems ``dy_b/dt = func(t_b, y_b)`` at once:
``y0`` is ``(B, *state)`` and every sample keeps its own time, step size, error norm and
accept/reject decision — the batched solving of torchode (Lienen & Günnemann, "torchode:
A Parallel ODE Solver for PyTorch", NeurIPS 2022 DLDE workshop, arXiv:2210.12375), so one
stiff sample no longer forces tiny steps on the whole batch (torchdiffeq issues #43,
#122). The vector field is called on the whole batch at once and must act row-wise: row
b of ``func(t, y)`` depends on row b of ``y`` and on ``t[b]`` only, with ``t`` a tensor of
shape ``(B,)`` (one time per sample, torchode's convention).

This module holds what the eager loop (:mod:`physode.ode.batch_loop`), the compiled loops
(:mod:`physode.ode.compiled_batch`) and the gradients share, written as tensor operations
over the batch: the per-sample scaled error norm, Hairer's starting step, the PI
controller of :class:`~physode.ode.controller.PIController` and the per-sample errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from physode.errors import MaxStepsExceeded, NonFiniteState, SolverError, StepSizeUnderflow
from physode.ode.controller import PIController
from physode.ode.loop import Config, Stats
from physode.ode.methods.base import Method
from physode.ode.methods.norm import Tol
from physode.ode.methods.step import Step, VectorField
from physode.ode.stiffness import stiffness_hint


@dataclass
class BatchStats(Stats):
    """Work counters of a per-sample solve.

    The inherited counters are sums over the samples, each sample counted as if it were
    solved alone; ``samples[b]`` holds sample b's own :class:`Stats` (also ``stats[b]``),
    and ``calls`` the evaluations of ``func`` on the whole batch (the work actually done).
    """

    samples: tuple[Stats, ...] = ()
    calls: int = 0

    def __getitem__(self, b: int) -> Stats:
        return self.samples[b]

    def __len__(self) -> int:
        return len(self.samples)

    @staticmethod
    def of(samples: list[Stats], calls: int) -> BatchStats:
        """The batch counters of ``samples`` (summed) and ``calls`` batched evaluations."""
        return BatchStats(nfe=sum(s.nfe for s in samples), steps=sum(s.steps for s in samples),
                          accepted=sum(s.accepted for s in samples),
                          rejected=sum(s.rejected for s in samples), samples=tuple(samples),
                          calls=calls)


@dataclass
class BatchTimes:
    """Output times of a per-sample solve: ``tau`` of shape ``(n_out, B)`` (state dtype;
    column b strictly monotonic, increasing or decreasing), the direction of each sample,
    and whether the times were given once for every sample (``shared``)."""

    tau: Tensor
    shared: bool
    direction: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.direction = torch.where(self.tau[-1] > self.tau[0], 1.0, -1.0).to(self.tau)

    @property
    def n_out(self) -> int:
        return int(self.tau.shape[0])

    @property
    def keys(self) -> Tensor:
        """``direction * tau`` per sample, ``(B, n_out)``: increasing rows to search in."""
        return (self.tau * self.direction).T.contiguous()


def column(v: Tensor, like: Tensor) -> Tensor:
    """A per-sample value ``v`` of shape ``(B,)`` shaped ``(B, 1, ..., 1)`` against ``like``."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


def row_field(func: VectorField) -> VectorField:
    """``func`` called with the per-sample times flattened to ``(B,)``: the methods step
    with column-shaped times and step sizes ``(B, 1, ..., 1)`` so that ``t + c h`` and
    ``y + h sum a k`` broadcast over the state."""

    def rows(t: Tensor, y: Tensor) -> Tensor:
        return func(t.reshape(-1), y)

    return rows


def sample_field(func: VectorField) -> VectorField:
    """Sample b's own field ``f(t, y)`` (``t`` 0-d, ``y`` of the state's shape) out of a
    row-wise batched ``func``: for the stiffness hint of one failing sample."""

    def one(t: Tensor, y: Tensor) -> Tensor:
        out: Tensor = func(t.reshape(1), y.unsqueeze(0))[0]
        return out

    return one


def sample_error_norm(step: Step, y0: Tensor, rtol: Tol, atol: Tol) -> Tensor:
    """:func:`physode.ode.methods.norm.error_norm` per sample, shape ``(B,)``: the scaled
    RMS norm of each row's local error (Hairer, Nørsett & Wanner I, II.4, eq. 4.10; DOP853's
    8(5,3) combination, II.10)."""
    assert step.err is not None
    b = y0.shape[0]
    y1 = step.y1.detach()
    scale = atol + rtol * torch.maximum(y0.detach().abs(), y1.abs())
    e5 = (step.err.detach() / scale).reshape(b, -1)
    if step.err3 is None:
        return e5.square().mean(1).sqrt()
    e3 = (step.err3.detach() / scale).reshape(b, -1)
    n5, n3 = e5.square().sum(1), e3.square().sum(1)
    denom = (n5 + 0.01 * n3) * e5.shape[1]
    return torch.where(denom > 0, n5 / denom.sqrt(), torch.zeros_like(n5))


def _rms(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).square().mean(1).sqrt()


def initial_steps(func: VectorField, method: Method, t0: Tensor, y0: Tensor, f0: Tensor,
                  direction: Tensor, span: Tensor, cfg: Config) -> Tensor:
    """Each sample's first step: ``first_step`` if given, else Hairer's starting step size
    (Solving ODEs I, II.4, as :func:`physode.ode.controller.initial_step`, per row), capped by
    ``max_step``; signed, shape ``(B,)``. ``func`` takes column-shaped times."""
    if cfg.first_step is not None:
        h = torch.clamp(span, max=abs(cfg.first_step))
    else:
        with torch.no_grad():
            y0d, f0d = y0.detach(), f0.detach()
            scale = cfg.atol + cfg.rtol * y0d.abs()
            d0, d1 = _rms(y0d / scale), _rms(f0d / scale)
            h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
            h0 = torch.where((h0 > 0) & torch.isfinite(h0), h0, 1e-6)
            h0 = torch.minimum(h0, span)
            y1 = y0d + column(direction * h0, y0) * f0d
            f1 = func(column(t0 + direction * h0, y0), y1)
            d2 = _rms((f1 - f0d) / scale) / h0
            q = (method.error_order or method.order) + 1
            dmax = torch.maximum(d1, d2)
            small = torch.clamp(h0 * 1e-3, min=1e-6)
            h1 = torch.where(dmax > 1e-15, (0.01 / dmax) ** (1.0 / q), small)
            h = torch.minimum(torch.minimum(100 * h0, h1), span)
            h = torch.where((h > 0) & torch.isfinite(h), h, torch.minimum(h0 * 1e-3, span))
    return direction * torch.clamp(h, max=cfg.max_step)


@dataclass(frozen=True)
class Control:
    """The default PI controller's constants (:class:`~physode.ode.controller.PIController`)
    and the loop limits, as plain numbers."""

    safety: float
    ifactor: float
    dfactor: float
    beta: float
    expo: float
    max_step: float
    max_steps: int

    @staticmethod
    def of(cfg: Config) -> Control:
        """The constants of ``cfg``'s default PI controller (``usable`` checked it is one)."""
        ctrl = cfg.controller
        assert isinstance(ctrl, PIController) and cfg.method.error_order is not None
        beta = cfg.method.pi_beta if ctrl.beta is None else ctrl.beta
        return Control(safety=ctrl.safety, ifactor=ctrl.ifactor, dfactor=ctrl.dfactor,
                       beta=beta, expo=1.0 / (cfg.method.error_order + 1) - 0.75 * beta,
                       max_step=cfg.max_step, max_steps=cfg.max_steps)

    def tensor(self, like: Tensor) -> Tensor:
        """The constants as one tensor: graph inputs of the compiled loop, never baked in."""
        return torch.tensor([self.safety, self.ifactor, self.dfactor, self.beta, self.expo,
                             self.max_step, float(self.max_steps)], dtype=like.dtype,
                            device=like.device)


def pi_control(ctl: Tensor, h_try: Tensor, ratio: Tensor, prev: Tensor, rejected: Tensor,
               direction: Tensor) -> tuple[Tensor, Tensor]:
    """Accept (ratio <= 1 and finite) and the next signed step of every sample, as
    :meth:`PIController.adapt <physode.ode.controller.PIController.adapt>` decides them
    (Hairer & Wanner II, IV.2, eq. 2.43c; no growth right after a rejection; a non-finite
    ratio shrinks by ``dfactor``), capped by ``max_step``. ``ctl``: :meth:`Control.tensor`."""
    safety, ifactor, dfactor, beta, expo, max_step, _ = ctl.unbind()
    finite = torch.isfinite(ratio)
    ok = (ratio <= 1.0) & finite
    fac11 = torch.where(finite, ratio, torch.ones_like(ratio)) ** expo
    fac = torch.clamp(fac11 / prev**beta / safety, 1.0 / ifactor, 1.0 / dfactor)
    h_acc = h_try / fac
    h_acc = torch.where(rejected, torch.sign(h_try) * torch.minimum(h_acc.abs(), h_try.abs()),
                        h_acc)
    h_rej = torch.where(finite, h_try / torch.minimum(1.0 / dfactor, fac11 / safety),
                        h_try * dfactor)
    return ok, direction * torch.minimum(torch.where(ok, h_acc, h_rej).abs(), max_step)


def in_sample(exc: SolverError, b: int) -> SolverError:
    """``exc`` with the failing sample named first in its message."""
    exc.args = (f"sample {b} of the batch: {exc.args[0]}",)
    return exc


def failure(code: str, b: int, func: VectorField, method: Method, t: float, y: Tensor,
            h: float, nonfinite: bool, max_steps: int) -> SolverError:
    """The error of sample ``b`` (``code``: "underflow" or "max_steps"), as the eager loop
    raises it for one solve, with the stiffness hint computed on sample b's own field."""
    one = sample_field(func)
    exc: SolverError
    if code == "underflow":
        exc = NonFiniteState(t) if nonfinite else StepSizeUnderflow(
            t, h, hint=stiffness_hint(one, method, t, y, h))
    else:
        exc = MaxStepsExceeded(t, max_steps, hint=stiffness_hint(one, method, t, y, h))
    return in_sample(exc, b)


def first_true(mask: Tensor) -> int | None:
    """Index of the first True of a 1-D mask, or None (one host sync)."""
    idx = torch.nonzero(mask)
    return int(idx[0, 0]) if idx.numel() else None


def check_start(y0: Tensor, f0: Tensor, t0: Tensor) -> None:
    """A non-finite initial state or derivative in some sample stops before any step."""
    bad = ~(torch.isfinite(y0.detach()).reshape(y0.shape[0], -1).all(1)
            & torch.isfinite(f0.detach()).reshape(y0.shape[0], -1).all(1))
    b = first_true(bad)
    if b is not None:
        raise in_sample(NonFiniteState(float(t0[b]), "initial state or derivative"), b)


def sample_stats(method: Method, nfe0: int, trials: list[int], accepted: list[int],
                 dense: list[int] | None = None) -> list[Stats]:
    """Per-sample counters, counted as the eager loop counts one solve: ``nfe0`` for f0 and
    the starting step, ``nfe_per_step`` per trial, one f1 per accepted step of a non-FSAL
    method, ``nfe_dense`` per step with interior outputs."""
    dense = dense if dense is not None else [0] * len(trials)
    return [Stats(nfe=nfe0 + n * method.nfe_per_step + (0 if method.fsal else a)
                  + d * method.nfe_dense, steps=n, accepted=a, rejected=n - a)
            for n, a, d in zip(trials, accepted, dense)]


def tiny_step(h: Tensor, t: Tensor) -> Tensor:
    """Whether ``|h|`` is below the floating-point resolution of ``t`` (the eager loop's
    underflow test), per sample."""
    eps = torch.finfo(h.dtype).eps
    return h.abs() <= 10 * eps * torch.clamp(t.abs(), min=1e-300)


def landing(t: Tensor, h: Tensor, t_end: Tensor,
            direction: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The trial step of each sample and where it ends: land exactly on ``t_end`` when the
    step would reach (or nearly reach) it. Returns ``(near, h_try, t_new)``."""
    near = direction * (t + 1.01 * h - t_end) >= 0
    return near, torch.where(near, t_end - t, h), torch.where(near, t_end, t + h)


__all__ = ["BatchStats", "BatchTimes", "Control", "check_start", "column", "failure",
           "first_true", "in_sample", "initial_steps", "landing", "pi_control", "row_field",
           "sample_error_norm", "sample_field", "sample_stats", "tiny_step"]
