"""The one explicit Runge–Kutta step, written as a pure function of tensors.

``rk_step(func, tab, t, h, y0, f0)`` evaluates the stages of any :class:`Tableau` and
returns the new state, the embedded error estimate and the stages. The forward solve, the
direct (backprop) gradient and the ACA reverse sweep all call exactly this function, so the
ACA rebuild of an accepted step reproduces the forward step bit for bit, and its local
backward is the same graph that direct backpropagation would have built.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import torch

from .tableau import Tableau

VectorField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Step(NamedTuple):
    y1: torch.Tensor
    err: torch.Tensor | None  # h * sum e_j k_j (None for fixed-step methods)
    err3: torch.Tensor | None  # DOP853's second estimate
    ks: list[torch.Tensor]  # the stages k_1..k_s (for FSAL methods k_s = f(t+h, y1))


def time_tensor(t: float, like: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor holding time ``t`` with the state's dtype and device (what func gets)."""
    return torch.full((), t, dtype=like.dtype, device=like.device)


def _combine(y: torch.Tensor, h: float, row, ks: list[torch.Tensor]) -> torch.Tensor:
    """``y + h * sum_j row_j ks[j]`` over the non-zero entries ``row = ((j, a_j), ...)``."""
    out = y
    for j, coef in row:
        out = torch.add(out, ks[j], alpha=h * coef)
    return out


@cache
def _b_row(b: tuple[float, ...]) -> tuple[tuple[int, float], ...]:
    return tuple((j, w) for j, w in enumerate(b) if w != 0.0)


def _weighted(h: float, weights: tuple[float, ...], ks: list[torch.Tensor]) -> torch.Tensor:
    acc = None
    for w, k in zip(weights, ks):
        if w != 0.0:
            acc = k * (h * w) if acc is None else torch.add(acc, k, alpha=h * w)
    assert acc is not None
    return acc


def rk_step(
    func: VectorField, tab: Tableau, t: float, h: float, y0: torch.Tensor, f0: torch.Tensor
) -> Step:
    """One step of size ``h`` from ``(t, y0)``, with ``f0 = func(t, y0)`` already known."""
    rows = tab.sparse_rows()
    ks = [f0]
    yi = y0
    for i in range(1, tab.stages):
        yi = _combine(y0, h, rows[i], ks)
        ks.append(func(time_tensor(t + tab.c[i] * h, y0), yi))
    # FSAL: the last stage is evaluated at y1 itself (its row of ``a`` equals ``b``).
    y1 = yi if tab.fsal else _combine(y0, h, _b_row(tab.b), ks)
    err = _weighted(h, tab.e, ks) if tab.e is not None else None
    err3 = _weighted(h, tab.e3, ks) if tab.e3 is not None else None
    return Step(y1, err, err3, ks)


def extended_stages(
    func: VectorField, tab: Tableau, t: float, h: float, y0: torch.Tensor,
    ks: list[torch.Tensor], f1: torch.Tensor,
) -> list[torch.Tensor]:
    """The stage list the dense output is written over: stages, f1, extra dense stages."""
    ext = list(ks) if tab.fsal else [*ks, f1]
    rows = tab.sparse_rows()[tab.stages:]
    for row, c in zip(rows, tab.c_extra):
        ext.append(func(time_tensor(t + c * h, y0), _combine(y0, h, row, ext)))
    return ext


def dense_eval(
    tab: Tableau, h: float, y0: torch.Tensor, ext: list[torch.Tensor], thetas: torch.Tensor
) -> torch.Tensor:
    """Dense output at all ``thetas`` (1-D, in [0, 1]) of one step in one tensor operation.

    Returns shape ``(len(thetas), *y0.shape)``. Small contractions are done by broadcasting
    rather than a BLAS matmul: for tens of states a threaded BLAS call costs more than the
    arithmetic, and thrashes when the machine is loaded.
    """
    P = tab.dense_matrix(y0.dtype, y0.device)  # (n_ext, degree)
    exps = torch.arange(1, P.shape[1] + 1, device=y0.device, dtype=y0.dtype)
    powers = thetas[:, None] ** exps  # (n_out, degree)
    K = torch.stack(ext).reshape(len(ext), -1)  # (n_ext, n)
    if len(thetas) * K.numel() <= _BROADCAST_LIMIT:
        B = (powers[:, None, :] * P).sum(-1)  # (n_out, n_ext)
        BK = (B[:, :, None] * K).sum(1)
    else:
        BK = (powers @ P.T) @ K
    return (y0.reshape(1, -1) + h * BK).reshape(len(thetas), *y0.shape)


_BROADCAST_LIMIT = 1 << 16
