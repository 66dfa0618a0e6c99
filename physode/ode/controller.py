"""Step-size controllers (objects with ``init`` / ``adapt``) and the starting step size.

Everything here runs on detached tensors and Python floats: the step-size sequence is data
for the gradient, not a function of the parameters (Zhuang et al. 2020, ACA; diffrax's
``stop_gradient`` on the controller).

A controller is a :class:`StepSizeController`. The loop calls ``init(method)`` once per
solve, which returns a fresh controller (state reset, the method's error order known), and
then ``adapt(h, ratio)`` after every trial of an adaptive method: ``ratio`` is the scaled
error norm (:func:`physode.ode.methods.norm.error_norm`, accept when <= 1, possibly NaN or
inf), the result is ``(accept, h_next)``. :class:`PIController` is the default; a caller
passes another one as ``options={"controller": ...}``.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from physode.errors import InvalidArgument
from physode.ode.methods.base import Method
from physode.ode.methods.norm import Tol
from physode.ode.methods.step import VectorField, time_tensor


class StepSizeController(ABC):
    """Accepts or rejects a trial step and proposes the next step size."""

    def init(self, method: Method) -> StepSizeController:
        """A fresh controller for one solve with ``method`` (this one is left untouched,
        so one object may configure many solves)."""
        return dataclasses.replace(self) if dataclasses.is_dataclass(self) else self

    @abstractmethod
    def adapt(self, h: float, ratio: float) -> tuple[bool, float]:
        """Accept (True) or reject a trial of signed size ``h`` whose scaled error norm is
        ``ratio``; return that decision and the signed size of the next trial."""


def _check(name: str, value: float, low: float, high: float, *, low_open: bool = True) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name} must be a number, got {value!r}") from None
    ok = (v > low if low_open else v >= low) and v <= high and math.isfinite(v)
    if not ok:
        left = "(" if low_open else "["
        raise InvalidArgument(f"{name} must lie in {left}{low:g}, {high:g}], got {value!r}")
    return v


@dataclass
class PIController(StepSizeController):
    """Proportional–integral step-size control (Gustafsson 1991; Hairer & Wanner,
    Solving ODEs II, IV.2, eq. 2.43c), the default controller.

    ``h_new = h * safety * ratio^-(1/q - 0.75 beta) * ratio_prev^beta`` with the growth
    factor clipped to [dfactor, ifactor] and ``q = error_order + 1``; beta = 0 gives the
    classical I-controller. After a rejection the step may not grow (Hairer's DOPRI5). A
    non-finite ratio (the trial overflowed) rejects and shrinks the step by ``dfactor``.

    ``beta=None`` takes the method's ``pi_beta``: 0 for every method (``beta=0.04`` gives
    Hairer's DOPRI5 setting): measured in ``benchmarks/forward.py`` on the figure-eight
    orbit and an MLP field, beta = 0.04 costs 3-20 % more function evaluations for fewer
    rejections, and beta = 0 matches torchdiffeq's dopri5 evaluation counts. beta must keep
    the exponent ``1/q - 0.75 beta`` positive (a larger error must shrink the step).
    """

    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    beta: float | None = None
    q: int = field(default=0, init=False)
    prev_ratio: float = field(default=1e-4, init=False)
    last_rejected: bool = field(default=False, init=False)
    _beta: float = field(default=0.0, init=False, repr=False)
    _expo: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.safety = _check("safety", self.safety, 0.0, 1.0)
        self.ifactor = _check("ifactor", self.ifactor, 1.0, math.inf, low_open=False)
        self.dfactor = _check("dfactor", self.dfactor, 0.0, 1.0)
        if self.beta is not None:
            self.beta = _check("beta", self.beta, 0.0, 1.0, low_open=False)

    def init(self, method: Method) -> PIController:
        if method.error_order is None:
            raise InvalidArgument(f"method {method.name!r} has no error estimate: a step-size "
                                  "controller needs an adaptive method")
        new = dataclasses.replace(self)
        new.q = method.error_order + 1
        new._beta = method.pi_beta if self.beta is None else self.beta
        new._expo = 1.0 / new.q - 0.75 * new._beta
        if not new._expo > 0:
            raise InvalidArgument(
                f"beta={new._beta!r} is too large for method {method.name!r}: the PI "
                f"controller needs beta < 4 / (3 q) = {4 / (3 * new.q):.4g} (q = error "
                "order + 1), else a larger error would grow the step")
        return new

    def adapt(self, h: float, ratio: float) -> tuple[bool, float]:
        """Accept or reject a step of size ``h`` with error ``ratio``; return the next h."""
        if not math.isfinite(ratio):
            self.last_rejected = True
            return False, h * self.dfactor
        fac11 = ratio**self._expo
        if ratio <= 1.0:
            fac = fac11 / self.prev_ratio**self._beta / self.safety
            fac = min(1.0 / self.dfactor, max(1.0 / self.ifactor, fac))
            h_new = h / fac
            if self.last_rejected:
                h_new = math.copysign(min(abs(h_new), abs(h)), h)
            self.prev_ratio = max(ratio, 1e-4)
            self.last_rejected = False
            return True, h_new
        self.last_rejected = True
        return False, h / min(1.0 / self.dfactor, fac11 / self.safety)


def _rms(x: torch.Tensor) -> float:
    return float(x.square().mean().sqrt())


def initial_step(
    func: VectorField, method: Method, t0: float, y0: torch.Tensor, f0: torch.Tensor,
    direction: float, rtol: Tol, atol: Tol, span: float,
) -> tuple[float, int]:
    """Hairer's starting step size (Solving ODEs I, II.4, "Starting step size").

    Returns the signed step and the number of function evaluations it cost (1). Degenerate
    scales (a derivative that overflows the scaled norm, a tiny or infinite state scale)
    give a small positive step instead of a division by zero or a NaN: the controller then
    shrinks it until the error is acceptable or the step underflows.
    """
    with torch.no_grad():
        y0d, f0d = y0.detach(), f0.detach()
        scale = atol + rtol * y0d.abs()
        d0 = _rms(y0d / scale)
        d1 = _rms(f0d / scale)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        if not (h0 > 0 and math.isfinite(h0)):  # d1 overflowed, or d0 / d1 underflowed
            h0 = 1e-6
        h0 = min(h0, span)
        y1 = y0d + (direction * h0) * f0d
        f1 = func(time_tensor(t0 + direction * h0, y0d), y1)
        d2 = _rms((f1 - f0d) / scale) / h0
        q = (method.error_order or method.order) + 1
        dmax = max(d1, d2)
        h1 = max(1e-6, h0 * 1e-3) if not dmax > 1e-15 else (0.01 / dmax) ** (1.0 / q)
        h = min(100 * h0, h1, span)
        if not (h > 0 and math.isfinite(h)):  # dmax infinite or NaN
            h = min(h0 * 1e-3, span)
        return direction * h, 1


__all__ = ["PIController", "StepSizeController", "initial_step"]
