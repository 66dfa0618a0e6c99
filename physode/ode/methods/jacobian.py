"""The linearisation a Rosenbrock step needs: J = df/dy, f_t = df/dt, and the LU of I/(h gamma) - J.

Everything here is a pure function of tensors, computed inside the step, so that the ACA
rebuild of a step (and direct backpropagation) differentiates through the Jacobian and the
linear solves — the Jacobian is part of the discrete method, its derivative part of the
discrete gradient.

How J is obtained:

- ``func.jacobian(t, y)`` when ``func`` supplies one (shape ``(N, N)`` over the flattened
  state, or ``(*batch, n, n)`` for a batch of independent rows); ``func.time_derivative(t,
  y)`` likewise, else df/dt by forward-mode AD on ``t`` (skipped when ``func.autonomous``).
- otherwise by reverse-mode autograd: one evaluation of ``func`` and one batched
  vector-Jacobian product (``torch.autograd.grad(..., is_grads_batched=True)``, vmap over
  the unit vectors) — measured ~40 % faster than ``torch.func.jacrev`` on small systems.
  With grad mode on, ``create_graph=True``: J is itself differentiable. When ``y`` carries
  an autograd history (gradient="direct"), ``torch.func.jacrev`` instead: ``autograd.grad``
  would walk that whole history at every step. Both give bitwise the same J.

A :class:`physode.System` (it has ``state_size``) evolves every leading batch row
independently, so its Jacobian is block diagonal: it is computed and factorised per row,
``(*batch, n, n)``, instead of as one ``(B n) x (B n)`` matrix. Any other ``func`` is
treated as one coupled system over ``y.numel()`` unknowns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD

from physode.ode.methods.small_inverse import inverse, known_inverse
from physode.ode.methods.step import Time, VectorField, declaration, time_tensor


@dataclass
class Linearization:
    """J and f_t at one point; ``rows``: J is ``(M, n, n)`` for M independent rows of the
    state reshaped to ``(M, n)``, else ``(1, N, N)`` over the flattened state."""

    J: torch.Tensor
    ft: torch.Tensor | None  # shaped like y; None when func does not depend on t
    rows: bool
    shape: torch.Size

    def factor(self, scale: Time, known: torch.Tensor | None = None
               ) -> LinearSolver | InverseSolver:
        """LU factorisation of ``scale * I - J`` (one per step); inside a compiled loop the
        inverse instead (see :class:`InverseSolver`). ``known``: that inverse, computed
        before for the same matrix (the ACA reverse sweep rebuilding a forward step), used
        as it is with the inverse's derivative attached
        (:func:`~physode.ode.methods.small_inverse.known_inverse`)."""
        n = self.J.shape[-1]
        eye = torch.eye(n, dtype=self.J.dtype, device=self.J.device)
        if known is not None:
            return InverseSolver(known_inverse(known, scale * eye - self.J), self.shape)
        if torch.compiler.is_compiling():
            return InverseSolver(inverse(scale * eye - self.J), self.shape)
        LU, piv, _ = torch.linalg.lu_factor_ex(scale * eye - self.J)
        return LinearSolver(LU, piv, self.shape)


@dataclass
class LinearSolver:
    """Stage solves with the LU factors (LAPACK ``getrf``/``getrs``): the eager steps."""

    LU: torch.Tensor
    piv: torch.Tensor
    shape: torch.Size

    def __call__(self, rhs: torch.Tensor) -> torch.Tensor:
        m, n = self.LU.shape[0], self.LU.shape[-1]
        x: torch.Tensor = torch.linalg.lu_solve(self.LU, self.piv, rhs.reshape(m, n, 1))
        return x.reshape(self.shape)


@dataclass
class InverseSolver:
    """Stage solves as products with the inverse ``(scale I - J)^-1``: inside the compiled
    loops, where LAPACK calls are external kernels (~25 µs per ``lu_solve`` on a 7 x 7
    system, measured on this machine kind, against ~0.5 µs for a fused matrix-vector
    product), one inverse per step and products that inductor fuses beat one ``lu_solve``
    per stage; the reverse sweep differentiates them with matrix products only. Up to
    12 x 12 the inverse itself is fused Gauss–Jordan elimination
    (:mod:`physode.ode.methods.small_inverse`), beyond that ``linalg.inv_ex``. The
    same solution as the LU solve to round-off times the condition number of the matrix
    (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., 2002, sec. 14.1)."""

    inv: torch.Tensor
    shape: torch.Size

    def __call__(self, rhs: torch.Tensor) -> torch.Tensor:
        m, n = self.inv.shape[0], self.inv.shape[-1]
        x = (self.inv * rhs.reshape(m, 1, n)).sum(-1)
        return x.reshape(self.shape)


def _independent_rows(func: VectorField, y: torch.Tensor) -> bool:
    return y.ndim > 1 and declaration(func, "state_size") == y.shape[-1]


def _jvp_time_derivative(func: VectorField, t: Time, y: torch.Tensor) -> torch.Tensor:
    """df/dt by ``torch.func.jvp`` on t: the traceable form (inside compiled loops)."""
    tt = time_tensor(t, y)
    out: torch.Tensor = torch.func.jvp(lambda s: func(s, y), (tt,), (torch.ones_like(tt),))[1]
    return out.reshape(y.shape)


def _dual_time_derivative(func: VectorField, t: Time, y: torch.Tensor) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return _jvp_time_derivative(func, t, y)
    tt = time_tensor(t, y)
    with fwAD.dual_level():
        dual: torch.Tensor = fwAD.make_dual(tt, torch.ones_like(tt))  # type: ignore[no-untyped-call]
        out = func(dual, y)
        tangent: torch.Tensor | None = fwAD.unpack_dual(out).tangent  # type: ignore[no-untyped-call]
    return torch.zeros_like(y) if tangent is None else tangent.reshape(y.shape)


def _supplied(func: VectorField, jacobian: VectorField, t: Time, y: torch.Tensor,
              rows: bool) -> Linearization:
    tt = time_tensor(t, y)
    J = jacobian(tt, y)
    n = y.shape[-1] if rows else y.numel()
    J = J.reshape(-1, n, n)
    time_derivative = declaration(func, "time_derivative")
    if time_derivative is not None:
        ft = time_derivative(tt, y).reshape(y.shape)
    elif declaration(func, "autonomous"):
        ft = None
    else:
        ft = _dual_time_derivative(func, t, y)
    return Linearization(J, ft, rows, y.shape)


def _functional(func: VectorField, t: Time, y: torch.Tensor, rows: bool,
                autonomous: bool) -> Linearization:
    """J (and f_t) by ``torch.func.jacrev``: for a ``y`` with autograd history (direct
    backpropagation), where a plain ``autograd.grad`` would walk the whole history of
    ``y`` at every step (quadratic in the number of steps), and inside the compiled loops
    (:mod:`physode.ode.compiled_loop`), where only ``torch.func`` transforms trace."""
    tt = time_tensor(t, y)
    n = y.shape[-1] if rows else y.numel()
    argnums = 1 if autonomous else (0, 1)
    out: Any
    if rows:
        def row(s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # one row, shape (n,)
            return func(s, z)

        jac = torch.func.vmap(torch.func.jacrev(row, argnums=argnums), in_dims=(None, 0))
        out = jac(tt, y.reshape(-1, n))
    else:
        def flat(s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # the flattened state
            return func(s, z.reshape(y.shape)).reshape(-1)

        out = torch.func.jacrev(flat, argnums=argnums)(tt, y.reshape(-1))
    if autonomous:
        return Linearization(out.reshape(-1, n, n), None, rows, y.shape)
    jt, jy = out
    return Linearization(jy.reshape(-1, n, n), jt.reshape(y.shape), rows, y.shape)


def transform_free(func: VectorField) -> bool:
    """Whether :func:`linearize` traces ``func`` without ``torch.func`` transforms inside
    a compiled graph: a declared Jacobian, and a declared time derivative or autonomy."""
    return declaration(func, "jacobian") is not None and (
        declaration(func, "time_derivative") is not None
        or bool(declaration(func, "autonomous")))


def factor_shape(func: VectorField, y: torch.Tensor) -> tuple[int, int, int]:
    """The shape ``(M, n, n)`` of the matrices a stiff step at ``y`` factorises (as
    :func:`linearize` lays out J): M independent rows of n states, or one of ``y.numel()``."""
    n = y.shape[-1] if _independent_rows(func, y) else y.numel()
    return (y.numel() // n, n, n)


def linearize(func: VectorField, t: Time, y: torch.Tensor) -> Linearization:
    """J = df/dy and f_t = df/dt at ``(t, y)`` (see the module docstring)."""
    rows = _independent_rows(func, y)
    jacobian = declaration(func, "jacobian")
    if jacobian is not None:
        return _supplied(func, jacobian, t, y, rows)
    create = torch.is_grad_enabled()
    autonomous = bool(declaration(func, "autonomous"))
    if torch.compiler.is_compiling() or (create and y.grad_fn is not None):
        return _functional(func, t, y, rows, autonomous)
    with torch.enable_grad():
        yy = y if (create and y.requires_grad) else y.detach().requires_grad_(True)
        tt = time_tensor(t, y).requires_grad_(not autonomous)
        out = func(tt, yy)
        n = y.shape[-1] if rows else y.numel()
        m = y.numel() // n
        if not out.requires_grad:  # f depends on neither y nor t
            return Linearization(y.new_zeros(m, n, n), None, rows, y.shape)
        # unit vectors: the i-th one picks output component i of every row at once
        eye = torch.eye(n, dtype=y.dtype, device=y.device)
        units = (eye[:, None, :].expand(n, m, n) if rows else eye).reshape(n, *y.shape)
        inputs = (yy,) if autonomous else (yy, tt)
        grads: tuple[torch.Tensor | None, ...]
        try:
            grads = torch.autograd.grad(out, inputs, units, is_grads_batched=True,
                                        create_graph=create, allow_unused=True)
        except RuntimeError:  # an op without a batching rule: one VJP per unit vector
            per = [torch.autograd.grad(out, inputs, u, retain_graph=True,
                                       create_graph=create, allow_unused=True) for u in units]
            grads = tuple(None if per[0][k] is None else torch.stack([p[k] for p in per])
                          for k in range(len(inputs)))
    gy = grads[0]
    if gy is None:
        J = y.new_zeros(m, n, n)
    else:  # gy[i, row, j] = d f[row, i] / d y[row, j]
        J = gy.reshape(n, m, n).transpose(0, 1)
    ft = None
    if not autonomous and len(grads) > 1 and grads[1] is not None:
        # the t-gradient of a batched VJP sums over rows: exact only for one coupled system
        ft = (grads[1].reshape(y.shape) if not rows
              else _dual_time_derivative(func, t, y))
    return Linearization(J, ft, rows, y.shape)
