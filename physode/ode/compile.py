"""Compiled stepping: one ``torch.compile``'d graph per step trial.

Small physical systems (tens of states) spend their time in per-operation overhead, not in
arithmetic: an eager dopri5 step of the three-body problem is a few hundred small kernel
launches. :class:`CompiledMethod` wraps any stepper family (the protocol of
:mod:`physode.ode.methods.base`) so that ``step`` runs as one compiled graph — in the
forward solve under ``no_grad`` and, with a compiled backward (AOTAutograd), in ACA's
rebuild of each accepted step. Times and step sizes enter as 0-d tensors, so neither a new
step size nor new parameter values trigger a recompile; compiled code is cached per method
for the life of the process, so a whole fit compiles once.

A vector field that dynamo cannot compile falls back to eager with one warning.
"""

from __future__ import annotations

import warnings

import torch

from physode.ode.controller import error_norm, error_ratio
from physode.ode.methods.stepper import Step, VectorField
from physode.ode.methods.tableau import Tableau


def _trial(method, func: VectorField, t: torch.Tensor, h: torch.Tensor, y0: torch.Tensor,
           f0: torch.Tensor) -> Step:
    return method.step(func, t, h, y0, f0)


def _trial_with_error(method, func: VectorField, t: torch.Tensor, h: torch.Tensor,
                      y0: torch.Tensor, f0: torch.Tensor, rtol, atol):
    step = method.step(func, t, h, y0, f0)
    return step, error_norm(step, y0, rtol, atol)


def _step_vjp(method, func, names: tuple[str, ...], t: torch.Tensor, h: torch.Tensor,
              y: torch.Tensor, f: torch.Tensor, a_y: torch.Tensor, a_f: torch.Tensor,
              ext_cot: torch.Tensor, *params: torch.Tensor):
    """Rebuild one accepted step and pull the cotangents of (y1, f1, dense stages) back to
    (y, f, parameters) — forward and vector-Jacobian product in one graph (torch.func.vjp
    over ``functional_call``), so the ACA reverse sweep costs one compiled call per step
    instead of a rebuild plus an autograd-engine run."""

    def forward(y_, f_, *ps):
        values = dict(zip(names, ps))

        def field(tt, yy):
            return torch.func.functional_call(func, values, (tt, yy))

        step = method.step(field, t, h, y_, f_)
        f1 = method.f1(field, t + h, step)
        if f1 is None:
            f1 = field(t + h, step.y1)
        ext = step.ks if method.fsal else [*step.ks, f1]
        return step.y1, f1, torch.stack(ext)

    _, pull = torch.func.vjp(forward, y, f, *params)
    return pull((a_y, a_f, ext_cot))


class CompiledMethod:
    """A stepper whose ``step`` is compiled; everything else is the wrapped method's."""

    def __init__(self, method) -> None:
        self.method = method
        self._compiled = torch.compile(_trial, dynamic=False)
        self._compiled_err = torch.compile(_trial_with_error, dynamic=False)
        self._compiled_vjp = torch.compile(_step_vjp, dynamic=False)
        self._eager_ids: set[int] = set()

    def __getattr__(self, name: str):
        return getattr(self.method, name)

    @property
    def fused_vjp(self) -> bool:
        """Whether :meth:`step_vjp` applies: explicit RK tableaux, whose dense output is a
        linear combination of the step's own stages."""
        return isinstance(self.method, Tableau) and not self.method.c_extra

    def step(self, func: VectorField, t, h, y0: torch.Tensor, f0: torch.Tensor) -> Step:
        """One trial (forward) or rebuild (ACA backward, grad enabled), compiled."""
        return self._call(self._compiled, _trial, func, t, h, y0, f0)

    def step_and_error(self, func: VectorField, t, h, y0: torch.Tensor, f0: torch.Tensor,
                       rtol, atol) -> tuple[Step, float]:
        """A forward trial with its error norm fused into the same compiled graph."""
        if id(func) in self._eager_ids or torch.is_grad_enabled():
            step = self.step(func, t, h, y0, f0)
            return step, error_ratio(self.method, step, y0, rtol, atol)
        step, ratio = self._call(self._compiled_err, _trial_with_error, func, t, h, y0, f0,
                                 rtol, atol)
        return step, float(ratio)

    def step_vjp(self, func, names: tuple[str, ...], t: float, h: float, y: torch.Tensor,
                 f: torch.Tensor, a_y: torch.Tensor, a_f: torch.Tensor,
                 ext_cot: torch.Tensor, params: tuple[torch.Tensor, ...]):
        """Cotangents of (y, f, *params) for one step (see :func:`_step_vjp`)."""
        return self._call(self._compiled_vjp, _step_vjp, func, t, h, y, f, a_y, a_f,
                          ext_cot, *params, names=names)

    def _call(self, compiled, eager, func, t, h, y0, f0, *extra, names=None):
        lead = (self.method, func) if names is None else (self.method, func, names)
        tt = torch.tensor(float(t), dtype=y0.dtype, device=y0.device)
        ht = torch.tensor(float(h), dtype=y0.dtype, device=y0.device)
        if id(func) in self._eager_ids:
            return eager(*lead, tt, ht, y0, f0, *extra)
        try:
            return compiled(*lead, tt, ht, y0, f0, *extra)
        except Exception as exc:  # a field dynamo/inductor cannot handle
            try:
                result = eager(*lead, tt, ht, y0, f0, *extra)
            except Exception:
                raise exc from None
            self._eager_ids.add(id(func))
            warnings.warn(f"physode: could not compile the step of {self.method.name} with "
                          f"this vector field ({type(exc).__name__}: {str(exc)[:200]}); "
                          "running eagerly", stacklevel=4)
            return result


_CACHE: dict[str, CompiledMethod] = {}


def compiled(method) -> CompiledMethod:
    """The process-wide compiled wrapper of ``method`` (compiled code is reused)."""
    if method.name not in _CACHE:
        _CACHE[method.name] = CompiledMethod(method)
    return _CACHE[method.name]
