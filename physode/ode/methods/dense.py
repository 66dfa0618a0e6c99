"""Dense output as a polynomial in theta over a list of vectors, one tensor operation.

``y(t + theta h) = y0 + scale * sum_j B_j(theta) V_j`` with ``B_j(theta) = sum_m P[j, m]
theta^(m+1)``: the form of :mod:`physode.ode.methods.tableau`, with ``scale = h`` when the
``V_j`` are slopes (explicit RK, ode23s) and ``scale = 1`` when they are increments
(Rosenbrock stages ``U_j`` in Hairer & Wanner's form).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch


@cache
def _matrix(raw: bytes, shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device) -> torch.Tensor:
    P = np.frombuffer(raw, dtype=np.float64).reshape(shape).copy()
    return torch.as_tensor(P, dtype=dtype, device=device)


def as_matrix(P: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``P`` (float64 numpy) as a cached tensor with ``like``'s dtype and device."""
    P = np.ascontiguousarray(P, dtype=np.float64)
    return _matrix(P.tobytes(), P.shape, like.dtype, like.device)


def poly_dense(P: np.ndarray, scale: float, y0: torch.Tensor, vectors: list[torch.Tensor],
               thetas: torch.Tensor) -> torch.Tensor:
    """States at every theta, shape ``(len(thetas), *y0.shape)``."""
    Pt = as_matrix(P, y0)
    powers = thetas[:, None] ** torch.arange(1, Pt.shape[1] + 1, device=y0.device,
                                             dtype=y0.dtype)
    B = (powers[:, None, :] * Pt).sum(-1)  # (n_out, n_vectors), tiny
    V = torch.stack(vectors).reshape(len(vectors), -1)
    # small contractions by broadcasting: a threaded BLAS call on tens of numbers costs
    # more than the arithmetic (and thrashes on a loaded machine)
    BV = (B[:, :, None] * V).sum(1) if B.shape[0] * V.numel() <= 1 << 16 else B @ V
    return (y0.reshape(1, -1) + scale * BV).reshape(len(thetas), *y0.shape)
