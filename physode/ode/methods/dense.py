"""The one dense-output implementation: a polynomial in theta over a list of vectors.

Every method in physode writes its continuous extension in one form (Hairer, Nørsett &
Wanner, *Solving ODEs I*, II.6): for ``theta`` in [0, 1],

    y(t + theta h) = y0 + scale * sum_j B_j(theta) V_j,    B_j(theta) = sum_m P[j, m] theta^(m+1),

with ``scale = h`` when the ``V_j`` are slopes (explicit Runge–Kutta stages, ode23s, the
symplectic Hermite interpolant) and ``scale = 1`` when they are increments (Rosenbrock
stages ``U_j`` in Hairer & Wanner's form). The matrix ``P`` is data: built by the
tableau helpers (:func:`physode.ode.methods.tableau.nested_dense`,
:func:`~physode.ode.methods.tableau.hermite_terms`) or given by the method's authors.

The output is linear in ``y0`` and in the ``V_j``, so the ACA reverse sweep pulls the
cotangents of dense outputs back analytically (:meth:`PolyDense.cotangents`) and feeds
them into the rebuild of the step, instead of differentiating the interpolant.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

_BROADCAST_LIMIT = 1 << 16


def _contract(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``A @ X`` for A (m, k), X (k, n): by broadcasting when small (a threaded BLAS call
    on tens of numbers costs more than the arithmetic and thrashes on a loaded machine)."""
    if A.shape[0] * X.numel() <= _BROADCAST_LIMIT:
        return (A[:, :, None] * X).sum(1)
    return A @ X


def powers(thetas: torch.Tensor, degree: int) -> torch.Tensor:
    """``(theta, theta^2, ..., theta^degree)`` along a new last axis, by a running product:
    ``pow`` with a tensor of exponents takes torch's general path (64 x 1000 outputs, four
    powers: 2.1 ms against 0.14 ms, one thread; the values agree to an ulp)."""
    return thetas[..., None].expand(*thetas.shape, degree).cumprod(-1)


class PolyDense:
    """The interpolant ``y0 + scale * sum_j B_j(theta) V_j`` of one method.

    ``P``: float64 matrix of shape (number of vectors, degree); ``by_h``: whether ``scale``
    is the step size ``h`` (slopes) or 1 (increments).
    """

    def __init__(self, P: npt.ArrayLike, *, by_h: bool = True) -> None:
        self.P: npt.NDArray[np.float64] = np.ascontiguousarray(P, dtype=np.float64)
        if self.P.ndim != 2:
            raise ValueError(f"dense-output matrix must be 2-D, got shape {self.P.shape}")
        self.by_h = by_h
        self._tensors: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    @property
    def n_vectors(self) -> int:
        """How many vectors ``V_j`` the interpolant combines."""
        return int(self.P.shape[0])

    def matrix(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``P`` as a tensor, cached per dtype and device."""
        key = (dtype, device)
        P = self._tensors.get(key)
        if P is None:
            P = self._tensors[key] = torch.as_tensor(self.P.copy(), dtype=dtype, device=device)
        return P

    def weights(self, thetas: torch.Tensor) -> torch.Tensor:
        """``B[o, j] = B_j(theta_o)``, shape ``(len(thetas), n_vectors)``."""
        P = self.matrix(thetas.dtype, thetas.device)
        th = powers(thetas, P.shape[1])  # (n_out, degree)
        return (th[:, None, :] * P).sum(-1)  # (n_out, n_vectors), tiny: no BLAS call

    def scale(self, h: float) -> float:
        return h if self.by_h else 1.0

    def eval(self, h: float, y0: torch.Tensor, vectors: list[torch.Tensor],
             thetas: torch.Tensor) -> torch.Tensor:
        """States at ``t + theta h`` for every theta (1-D), shape ``(len(thetas), *y0.shape)``,
        in one tensor operation."""
        V = torch.stack(vectors).reshape(len(vectors), -1)
        BV = _contract(self.weights(thetas), V)
        return (y0.reshape(1, -1) + self.scale(h) * BV).reshape(len(thetas), *y0.shape)

    def cotangents(self, h: float, thetas: torch.Tensor,
                   grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pull the cotangents ``grad_out`` of the outputs at ``thetas`` back to ``y0`` and
        to the vectors, with no graph: ``(sum_o G_o, scale B^T G)``, flattened per vector."""
        G = grad_out.reshape(len(thetas), -1)
        B = self.weights(thetas)
        return G.sum(0), self.scale(h) * _contract(B.T.contiguous(), G)


__all__ = ["PolyDense", "powers"]
