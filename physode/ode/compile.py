"""Compiled stepping: :class:`CompiledMethod`, a method whose step is one compiled graph.

Small physical systems (tens of states) spend their time in per-operation overhead, not in
arithmetic: an eager dopri5 step of the three-body problem is a few hundred small kernel
launches. :class:`CompiledMethod` wraps a method whose step is functional (declared
``functional_step``: only calls of ``func`` and tensor arithmetic — the explicit
Runge–Kutta family) so that ``step`` runs as one compiled graph — in the forward solve
under ``no_grad`` and, with a compiled backward (AOTAutograd), in ACA's rebuild of each
accepted step. Times and step sizes enter as 0-d tensors, so neither a new step size nor
new parameter values trigger a recompile; compiled code is cached per method for the life
of the process, so a whole fit compiles once. Other methods (Rosenbrock steps take an
inner Jacobian, symplectic steps read the user's split declaration) run eagerly.

A vector field that dynamo cannot compile falls back to eager with one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from physode.ode.methods.base import Method
from physode.ode.methods.norm import Tol, error_norm, error_ratio
from physode.ode.methods.step import Step, Time, VectorField
from physode.ode.vec_isa import isa_options

Grads = tuple[torch.Tensor | None, ...]


def _trial(method: Method, func: VectorField, t: torch.Tensor, h: torch.Tensor,
           y0: torch.Tensor, f0: torch.Tensor) -> Step:
    return method.step(func, t, h, y0, f0)


def _trial_with_error(method: Method, func: VectorField, t: torch.Tensor, h: torch.Tensor,
                      y0: torch.Tensor, f0: torch.Tensor, rtol: Tol,
                      atol: Tol) -> tuple[Step, torch.Tensor]:
    step = method.step(func, t, h, y0, f0)
    return step, error_norm(step, y0, rtol, atol)


def _step_vjp(method: Method, func: torch.nn.Module, names: tuple[str, ...], t: torch.Tensor,
              h: torch.Tensor, y: torch.Tensor, f: torch.Tensor, a_y: torch.Tensor,
              a_f: torch.Tensor, ext_cot: torch.Tensor, *params: torch.Tensor) -> Grads:
    """Rebuild one accepted step and pull the cotangents of (y1, f1, dense stages) back to
    (y, f, parameters) — forward and vector-Jacobian product in one graph (torch.func.vjp
    over ``functional_call``), so the ACA reverse sweep costs one compiled call per step
    instead of a rebuild plus an autograd-engine run."""

    def forward(y_: torch.Tensor, f_: torch.Tensor,
                *ps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        values = dict(zip(names, ps))

        def field(tt: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = torch.func.functional_call(func, values, (tt, yy))
            return out

        step = method.step(field, t, h, y_, f_)
        f1 = method.f1(field, t + h, step)
        if f1 is None:
            f1 = field(t + h, step.y1)
        ext = method.extended_stages(field, t, h, y_, step.ks, f1)
        return step.y1, f1, torch.stack(ext)

    pull = torch.func.vjp(forward, y, f, *params)[1]
    grads: Grads = pull((a_y, a_f, ext_cot))
    return grads


class CompiledMethod(Method):
    """A method whose ``step`` is compiled; it declares what the wrapped method declares,
    and adds a fused compiled rebuild + VJP for ACA where that applies."""

    def __init__(self, method: Method) -> None:
        self.method = method
        self.name = method.name
        self.citation = method.citation
        self.order = method.order
        self.error_order = method.error_order
        self.dense_order = method.dense_order
        self.adaptive = method.adaptive
        self.fsal = method.fsal
        self.stiff = method.stiff
        self.supports_adjoint = method.supports_adjoint
        self.linear_dense = method.linear_dense
        self.functional_step = method.functional_step
        self.pi_beta = method.pi_beta
        self.nfe_per_step = method.nfe_per_step
        self.nfe_dense = method.nfe_dense
        self.n_extended = method.n_extended
        self.interpolant = method.interpolant
        # the fused VJP differentiates the stages the dense output combines: only when they
        # are the step's own (no extra evaluations) and the step is functional
        self.fused_vjp = (method.functional_step and method.linear_dense
                          and method.nfe_dense == 0)
        isa = isa_options()
        self._compiled: Callable[..., Any] = torch.compile(_trial, dynamic=False,
                                                           options=isa)
        self._compiled_err: Callable[..., Any] = torch.compile(_trial_with_error,
                                                               dynamic=False, options=isa)
        self._compiled_vjp: Callable[..., Any] = torch.compile(_step_vjp, dynamic=False,
                                                               options=isa)
        self._eager_ids: set[int] = set()

    def step(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
             f0: torch.Tensor) -> Step:
        """One trial (forward) or rebuild (ACA backward, grad enabled), compiled."""
        step: Step = self._call(self._compiled, _trial, func, t, h, y0, f0)
        return step

    def step_and_error(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
                       f0: torch.Tensor, rtol: Tol, atol: Tol) -> tuple[Step, float]:
        """A forward trial with its error norm fused into the same compiled graph."""
        if id(func) in self._eager_ids or torch.is_grad_enabled():
            step = self.step(func, t, h, y0, f0)
            return step, error_ratio(step, y0, rtol, atol)
        step, ratio = self._call(self._compiled_err, _trial_with_error, func, t, h, y0, f0,
                                 rtol, atol)
        return step, float(ratio)

    def f1(self, func: VectorField, t1: Time, step: Step) -> torch.Tensor | None:
        return self.method.f1(func, t1, step)

    def extended_stages(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
                        ks: list[torch.Tensor], f1: torch.Tensor) -> list[torch.Tensor]:
        return self.method.extended_stages(func, t, h, y0, ks, f1)

    def dense_eval(self, h: float, y0: torch.Tensor, ext: list[torch.Tensor],
                   thetas: torch.Tensor) -> torch.Tensor:
        return self.method.dense_eval(h, y0, ext, thetas)

    def dense_cotangents(self, h: float, thetas: torch.Tensor,
                         grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.method.dense_cotangents(h, thetas, grad_out)

    def step_vjp(self, func: VectorField, names: tuple[str, ...], t: float, h: float,
                 y: torch.Tensor, f: torch.Tensor, a_y: torch.Tensor, a_f: torch.Tensor,
                 ext_cot: torch.Tensor, params: tuple[torch.Tensor, ...]) -> Grads:
        """Cotangents of ``(y, f, *params)`` for one step (see :func:`_step_vjp`); ``func`` is
        an ``nn.Module`` whose trainable parameters are ``params``, named ``names``."""
        if not self.fused_vjp:
            raise NotImplementedError(f"method {self.name!r} has no fused step VJP")
        grads: Grads = self._call(self._compiled_vjp, _step_vjp, func, t, h, y, f, a_y, a_f,
                                  ext_cot, *params, names=names)
        return grads

    def _call(self, compiled: Callable[..., Any], eager: Callable[..., Any],
              func: VectorField, t: Time, h: Time, y0: torch.Tensor, f0: torch.Tensor,
              *extra: Any, names: tuple[str, ...] | None = None) -> Any:
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


def compiled(method: Method) -> Method:
    """The process-wide compiled wrapper of ``method`` (compiled code is reused); a method
    whose step is not functional (``functional_step`` False) is returned as it is."""
    if not method.functional_step or isinstance(method, CompiledMethod):
        return method
    if method.name not in _CACHE:
        _CACHE[method.name] = CompiledMethod(method)
    return _CACHE[method.name]


__all__ = ["CompiledMethod", "compiled"]
