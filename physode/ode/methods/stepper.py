"""The one explicit Runge–Kutta step, written as a pure function of tensors.

``rk_step(func, tab, t, h, y0, f0)`` evaluates the stages of any :class:`Tableau` and
returns the new state, the embedded error estimate and the stages. The forward solve, the
direct (backprop) gradient and the ACA reverse sweep all call exactly this function, so the
ACA rebuild of an accepted step reproduces the forward step bit for bit, and its local
backward is the same graph that direct backpropagation would have built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from physode.ode.methods.tableau import Tableau

VectorField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Step(NamedTuple):
    y1: torch.Tensor
    err: torch.Tensor | None  # h * sum e_j k_j (None for fixed-step methods)
    err3: torch.Tensor | None  # DOP853's second estimate
    ks: list[torch.Tensor]  # the stages k_1..k_s (for FSAL methods k_s = f(t+h, y1))


Time = float | torch.Tensor  # a Python float in eager mode, a 0-d tensor when compiled


def time_tensor(t: Time, like: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor holding time ``t`` with the state's dtype and device (what func gets)."""
    if isinstance(t, torch.Tensor):
        return t.to(like.dtype)
    return torch.full((), t, dtype=like.dtype, device=like.device)


def _axpy(acc: torch.Tensor | None, k: torch.Tensor, scale: Time) -> torch.Tensor:
    """``acc + scale * k``: one fused add with a float scale (eager), a product with a
    tensor scale (compiled, where the compiler fuses it)."""
    if isinstance(scale, torch.Tensor):
        return k * scale if acc is None else acc + k * scale
    return k * scale if acc is None else torch.add(acc, k, alpha=scale)


def _combine(y: torch.Tensor, h: Time, row, ks: list[torch.Tensor]) -> torch.Tensor:
    """``y + h * sum_j row_j ks[j]`` over the non-zero entries ``row = ((j, a_j), ...)``."""
    out = y
    for j, coef in row:
        out = _axpy(out, ks[j], h * coef)
    return out


def _weighted(h: Time, weights: tuple[float, ...], ks: list[torch.Tensor]) -> torch.Tensor:
    acc = None
    for w, k in zip(weights, ks):
        if w != 0.0:
            acc = _axpy(acc, k, h * w)
    assert acc is not None
    return acc


def rk_step(
    func: VectorField, tab: Tableau, t: Time, h: Time, y0: torch.Tensor, f0: torch.Tensor
) -> Step:
    """One step of size ``h`` from ``(t, y0)``, with ``f0 = func(t, y0)`` already known."""
    rows = tab.rows
    ks = [f0]
    yi = y0
    for i in range(1, tab.stages):
        yi = _combine(y0, h, rows[i], ks)
        ks.append(func(time_tensor(t + tab.c[i] * h, y0), yi))
    # FSAL: the last stage is evaluated at y1 itself (its row of ``a`` equals ``b``).
    y1 = yi if tab.fsal else _combine(y0, h, tab.b_row, ks)
    err = _weighted(h, tab.e, ks) if tab.e is not None else None
    err3 = _weighted(h, tab.e3, ks) if tab.e3 is not None else None
    return Step(y1, err, err3, ks)


def extended_stages(
    func: VectorField, tab: Tableau, t: float, h: float, y0: torch.Tensor,
    ks: list[torch.Tensor], f1: torch.Tensor,
) -> list[torch.Tensor]:
    """The stage list the dense output is written over: stages, f1, extra dense stages."""
    ext = list(ks) if tab.fsal else [*ks, f1]
    rows = tab.rows[tab.stages:]
    for row, c in zip(rows, tab.c_extra):
        ext.append(func(time_tensor(t + c * h, y0), _combine(y0, h, row, ext)))
    return ext


def dense_weights(tab: Tableau, thetas: torch.Tensor) -> torch.Tensor:
    """``B[o, j] = B_j(theta_o)``, the weights of the extended stages in the dense output."""
    P = tab.dense_matrix(thetas.dtype, thetas.device)  # (n_ext, degree)
    exps = torch.arange(1, P.shape[1] + 1, device=thetas.device, dtype=thetas.dtype)
    powers = thetas[:, None] ** exps  # (n_out, degree)
    return (powers[:, None, :] * P).sum(-1)  # (n_out, n_ext), tiny: no BLAS call


def _contract(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``A @ X`` for A (m, k), X (k, n): by broadcasting when small (a threaded BLAS call
    on tens of numbers costs more than the arithmetic and thrashes on a loaded machine)."""
    if A.shape[0] * X.numel() <= _BROADCAST_LIMIT:
        return (A[:, :, None] * X).sum(1)
    return A @ X


def dense_eval(
    tab: Tableau, h: float, y0: torch.Tensor, ext: list[torch.Tensor], thetas: torch.Tensor
) -> torch.Tensor:
    """Dense output at all ``thetas`` (1-D, in [0, 1]) of one step in one tensor operation.

    Returns shape ``(len(thetas), *y0.shape)``.
    """
    K = torch.stack(ext).reshape(len(ext), -1)  # (n_ext, n)
    BK = _contract(dense_weights(tab, thetas), K)
    return (y0.reshape(1, -1) + h * BK).reshape(len(thetas), *y0.shape)


def dense_cotangents(
    tab: Tableau, h: float, thetas: torch.Tensor, grad_out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pull the cotangents of dense outputs back to (y0, extended stages), with no graph.

    The dense output ``y0 + h B K`` is linear in y0 and in the stages, so its vector-Jacobian
    product is ``(sum_o G_o, h B^T G)``: ACA feeds these into the step's own rebuild as
    extra cotangents instead of rebuilding the interpolant with autograd.
    """
    G = grad_out.reshape(len(thetas), -1)
    B = dense_weights(tab, thetas)
    return G.sum(0), h * _contract(B.T.contiguous(), G)


_BROADCAST_LIMIT = 1 << 16
