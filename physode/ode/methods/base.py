"""The :class:`Method` base class: the stepping interface and the capabilities a method declares.

The integration loop (:mod:`physode.ode.loop`), the gradients (:mod:`physode.ode.gradients`),
the compiled wrapper and the stiffness hint talk to a method only through this class. What a
method can do is a declared attribute with a default here — like the traits of Julia's
OrdinaryDiffEq (``isadaptive``, ``isfsal``, ``alg_order``) or diffrax's marker classes — so
nobody probes a method with ``hasattr``. A new stepper family is a subclass registered by
name in :data:`physode.ode.methods.METHODS`, never an if/elif on method names.

Declared capabilities (class attributes; a family sets them per instance where they vary):

- ``adaptive``: has an embedded error estimate (``Step.err``), so the controller may choose h.
- ``order``, ``error_order`` (None for fixed-step methods; the controller's exponent is
  ``1 / (error_order + 1)``), ``dense_order``: the order of the continuous extension.
- ``fsal``: the step hands on ``f(t + h, y1)`` ("first same as last"); see :meth:`f1`.
- ``stiff``: meant for stiff problems (named in the stiffness hint of explicit failures).
- ``supports_adjoint``: ``gradient="adjoint"`` can run it.
- ``linear_dense``: the dense output is ``y0 + scale * sum_j B_j(theta) V_j`` over
  :meth:`extended_stages` (:class:`~physode.ode.methods.dense.PolyDense`), so ACA pulls the
  cotangents of outputs back analytically (:meth:`dense_cotangents`).
- ``functional_step``: :meth:`step` is only calls of ``func`` and tensor arithmetic (no
  probing of ``func``, no inner autograd), so ``torch.func`` transforms may run it.
- ``fused_vjp``: :meth:`step_vjp` (a compiled rebuild plus vector-Jacobian product) exists.
- ``compiled_loop``: the whole adaptive solve may run as compiled loops
  (:mod:`physode.ode.compiled_loop`): adaptive, functional, and a dense output
  ``y0 + h sum_j B_j(theta) K_j`` over the step's extended stages.
- ``reuses_factor``: the step reports the inverse it solved its stages with
  (``Step.factor``, inside compiled loops) and :meth:`step_reusing` rebuilds the step
  with it, so the ACA reverse sweep does not invert the same matrix again.
- ``pi_beta``: the method's default PI-controller gain; ``citation``: where it comes from.
- ``nfe_per_step``: new evaluations of one trial; ``nfe_dense``: extra evaluations of
  :meth:`extended_stages`; ``n_extended``: how many vectors it returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from physode.ode.methods.dense import PolyDense
from physode.ode.methods.norm import Tol, error_ratio
from physode.ode.methods.step import Step, Time, VectorField, time_tensor


class Method(ABC):
    """A one-step method: what it can do (declared attributes) and how it steps."""

    name: str = ""
    citation: str = ""
    order: int = 1
    error_order: int | None = None
    dense_order: int = 3
    adaptive: bool = False
    fsal: bool = False
    stiff: bool = False
    supports_adjoint: bool = True
    linear_dense: bool = False
    functional_step: bool = False
    fused_vjp: bool = False
    compiled_loop: bool = False
    reuses_factor: bool = False
    pi_beta: float = 0.0
    nfe_per_step: int = 1
    nfe_dense: int = 0
    n_extended: int = 0
    interpolant: PolyDense | None = None

    @abstractmethod
    def step(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
             f0: torch.Tensor) -> Step:
        """One trial step from ``(t, y0)`` with ``f0 = func(t, y0)``: a pure function of
        tensors, which the ACA reverse sweep rebuilds verbatim."""

    def step_reusing(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
                     f0: torch.Tensor, factor: torch.Tensor) -> Step:
        """:meth:`step` with ``factor``, the ``Step.factor`` of the same step computed
        before, in place of factorising again (``reuses_factor`` methods only)."""
        raise NotImplementedError(f"method {self.name!r} does not reuse factorisations")

    def step_and_error(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
                       f0: torch.Tensor, rtol: Tol, atol: Tol) -> tuple[Step, float]:
        """A forward trial and its scaled error norm (a float, outside any graph)."""
        step = self.step(func, t, h, y0, f0)
        return step, error_ratio(step, y0, rtol, atol)

    def f1(self, func: VectorField, t1: Time, step: Step) -> torch.Tensor | None:
        """``f(t + h, y1)`` when the step already computed it, else None (the loop
        evaluates it)."""
        return None

    def extended_stages(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
                        ks: list[torch.Tensor], f1: torch.Tensor) -> list[torch.Tensor]:
        """The vectors the dense output combines (``nfe_dense`` extra evaluations)."""
        return list(ks)

    def dense_eval(self, h: float, y0: torch.Tensor, ext: list[torch.Tensor],
                   thetas: torch.Tensor) -> torch.Tensor:
        """States at ``t + theta h`` for every theta, shape ``(len(thetas), *y0.shape)``."""
        return self._interpolant().eval(h, y0, ext, thetas)

    def dense_cotangents(self, h: float, thetas: torch.Tensor,
                         grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cotangents of ``y0`` and of the extended stages (stacked, flattened) from those
        of the dense outputs at ``thetas``; only for ``linear_dense`` methods."""
        if not self.linear_dense:
            raise NotImplementedError(f"method {self.name!r} declares no linear dense output")
        return self._interpolant().cotangents(h, thetas, grad_out)

    def step_vjp(self, func: VectorField, names: tuple[str, ...], t: float, h: float,
                 y: torch.Tensor, f: torch.Tensor, a_y: torch.Tensor, a_f: torch.Tensor,
                 ext_cot: torch.Tensor, params: tuple[torch.Tensor, ...]
                 ) -> tuple[torch.Tensor | None, ...]:
        """Cotangents of ``(y, f, *params)`` of one rebuilt step, fused (``fused_vjp``)."""
        raise NotImplementedError(f"method {self.name!r} has no fused step VJP")

    def _interpolant(self) -> PolyDense:
        if self.interpolant is None:
            raise NotImplementedError(f"method {self.name!r} has no dense output")
        return self.interpolant

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


__all__ = ["Method", "Step", "Time", "Tol", "VectorField", "time_tensor"]
