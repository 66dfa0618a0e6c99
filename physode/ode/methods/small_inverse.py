"""The inverse of a batch of small matrices as tensor operations that inductor fuses.

Inside the compiled solver loops every Rosenbrock step inverts ``I/(h gamma) - J``. ATen's
``linalg_inv_ex`` has no C shim, so the loop calls it through the dispatcher by name and
LAPACK then factorises and solves with its own temporaries: ~9 µs per 7 x 7 inverse on
this machine kind, more than the rest of the step together. Written as Gauss–Jordan
elimination in tensor operations, the inverse becomes part of the step's fused C++
kernel: ~3.6 µs (measured in a compiled ``while_loop``, one thread, float64).

The elimination uses partial pivoting with implicit row interchanges: at column k the
pivot is the largest remaining entry among the rows not yet used as pivots, that row is
scaled to a unit pivot and column k is eliminated from every other row. The rows are
never moved; the inverse is read out in pivot order at the end. Gauss–Jordan elimination
with partial pivoting is forward stable for computing an inverse, like the LU-based
inverse LAPACK computes (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd
ed., SIAM 2002, sec. 14.4; Golub & Van Loan, *Matrix Computations*, 4th ed., 2013,
sec. 3.4).

The loop over columns is unrolled at trace time, so the graph grows with n^2 operations:
:data:`MAX_SIZE` bounds the matrices it is used for; larger ones keep ``linalg.inv_ex``.

Differentiation does not go through the elimination (its pivot choices are piecewise
constant, and its graph would be n times longer than needed): the value is the computed
inverse ``X`` and the derivative is that of the exact inverse, ``dX = -X dA X``, attached
as ``X - X (A - stop(A)) X``, whose value is ``X`` exactly. Reverse and forward mode, in
torch.autograd and torch.func alike, see the analytic derivative.
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_SIZE = 12
"""Largest ``n`` inverted by unrolled Gauss–Jordan elimination inside compiled graphs."""


def gauss_jordan(A: Tensor) -> Tensor:
    """``A^-1`` for ``A (*batch, n, n)`` by Gauss–Jordan elimination with partial pivoting
    (implicit row interchanges; see the module docstring). A singular matrix gives
    non-finite entries, which the step's error norm rejects."""
    n = A.shape[-1]
    batch = A.shape[:-2]
    rows = torch.arange(n, device=A.device)
    eye = torch.eye(n, dtype=A.dtype, device=A.device).expand(A.shape)
    M = torch.cat([A, eye], dim=-1)  # [A | I], reduced to [P | P A^-1]
    pivots: list[Tensor] = []
    for k in range(n):
        size = M[..., :, k].abs()
        for p in pivots:  # rows already used as pivots are out of the running
            size = torch.where(rows == p, -1.0, size)
        p = size.argmax(-1, keepdim=True)  # (*batch, 1)
        pivots.append(p)
        row = M.gather(-2, p[..., None].expand(*batch, 1, 2 * n))
        row = row / row[..., k:k + 1]
        M = torch.where((rows == p)[..., None], row, M - M[..., :, k:k + 1] * row)
    order = torch.cat(pivots, dim=-1)  # order[k]: the row whose pivot is in column k
    return M[..., n:].gather(-2, order[..., None].expand(*batch, n, n))


def _product(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for small matrices as a product and a sum (one fused loop)."""
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)


def small_inverse(A: Tensor) -> Tensor:
    """``A^-1`` by :func:`gauss_jordan`, differentiable with the exact inverse's derivative
    ``-X dA X`` (see the module docstring). With grad mode off (the forward loops) the
    derivative term is left out: 7 % of a compiled cascade solve. Forward-mode AD under
    no_grad then differentiates the elimination itself, which for fixed pivots is the
    same derivative to round-off."""
    if not torch.is_grad_enabled():
        return gauss_jordan(A)
    return known_inverse(gauss_jordan(A.detach()), A)


def known_inverse(X: Tensor, A: Tensor) -> Tensor:
    """``A^-1`` given its value ``X`` (computed before, e.g. by the forward loop): ``X``
    itself, with the exact inverse's derivative ``-X dA X`` attached when grad mode is on
    (``X - X (A - stop(A)) X``). The ACA reverse sweep rebuilds a Rosenbrock step with the
    inverse the forward step computed instead of inverting again."""
    if not torch.is_grad_enabled():
        return X
    mul = _product if A.shape[-1] <= MAX_SIZE else torch.matmul
    return X - mul(mul(X, A - A.detach()), X)


def inverse(A: Tensor) -> Tensor:
    """The inverse a compiled loop uses: :func:`small_inverse` up to :data:`MAX_SIZE`, else
    ``torch.linalg.inv_ex`` (an external kernel)."""
    if A.shape[-1] <= MAX_SIZE:
        return small_inverse(A)
    inv: Tensor = torch.linalg.inv_ex(A)[0]
    return inv


__all__ = ["MAX_SIZE", "gauss_jordan", "inverse", "known_inverse", "small_inverse"]
