"""Butcher tableaux as data, and the dense-output matrices derived from them.

A method is a :class:`Tableau`: nodes ``c``, the strictly lower-triangular matrix ``a``,
weights ``b``, embedded error weights ``e = b - b_hat`` and a dense-output matrix ``P``.
One generic stepper (:mod:`physode.ode.methods.stepper`) runs any of them.

Dense output is always written in one form (Hairer, Nørsett & Wanner, *Solving ODEs I*,
II.6): for ``theta`` in [0, 1],

    y(t + theta h) = y + h * sum_j B_j(theta) K_j,    B_j(theta) = sum_m P[j, m] theta^(m+1),

over the *extended* stage list ``K = [k_1 .. k_s, f(t+h, y1) (unless FSAL), extra dense
stages]``. Cubic Hermite interpolation, the Dormand–Prince and DOP853 continuous extensions
and Tsitouras' polynomials all fit this form, so the interpolation code is one matrix
product for any method, and the ACA reverse sweep rebuilds it with the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge–Kutta method.

    ``order`` is the order of ``b``; ``error_order`` the order of the embedded solution (the
    step-size controller uses the exponent ``1/(error_order+1)``); ``e`` is None for
    fixed-step methods. ``fsal``: the last stage is evaluated at (t+h, y1) ("first same as
    last"), so the next step's first stage is free. ``e3``: DOP853's second error estimate
    (Hairer's 8(5,3) norm). ``a_extra``/``c_extra``: stages evaluated only for dense output,
    after the step is accepted. ``dense_order``: order q of the continuous extension (its
    local error is O(h^(q+1)), Hairer, Nørsett & Wanner I, II.6); cubic Hermite has q = 3.
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    e: tuple[float, ...] | None = None
    error_order: int | None = None
    fsal: bool = False
    P: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    dense_order: int = 3
    e3: tuple[float, ...] | None = None
    a_extra: tuple[tuple[float, ...], ...] = ()
    c_extra: tuple[float, ...] = ()
    pi_beta: float = 0.0
    citation: str = ""

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.e is not None

    @property
    def f1_index(self) -> int:
        """Index of f(t+h, y1) in the extended stage list."""
        return self.stages - 1 if self.fsal else self.stages

    @property
    def n_extended(self) -> int:
        return self.P.shape[0]

    @property
    def nfe_per_step(self) -> int:
        """New function evaluations of one step trial (k_1 is the previous f1)."""
        return self.stages - 1

    @property
    def nfe_dense(self) -> int:
        """Extra evaluations for the dense output of a step (DOP853's three stages)."""
        return len(self.c_extra)

    # The stepper-family interface the integration loop and the gradients use. Other
    # families (Rosenbrock, symplectic) provide the same four methods.
    def step(self, func, t: float, h: float, y0: torch.Tensor, f0: torch.Tensor):
        from physode.ode.methods.stepper import rk_step

        return rk_step(func, self, t, h, y0, f0)

    def f1(self, func, t1: float, step) -> torch.Tensor | None:
        """f(t+h, y1) if the step already has it (FSAL), else None."""
        return step.ks[-1] if self.fsal else None

    def extended_stages(self, func, t: float, h: float, y0: torch.Tensor, ks, f1):
        from physode.ode.methods.stepper import extended_stages

        return extended_stages(func, self, t, h, y0, ks, f1)

    def dense_eval(self, h: float, y0: torch.Tensor, ext, thetas: torch.Tensor):
        from physode.ode.methods.stepper import dense_eval

        return dense_eval(self, h, y0, ext, thetas)

    def dense_cotangents(self, h: float, thetas: torch.Tensor, grad_out: torch.Tensor):
        """Cotangents of (y0, extended stages) from those of the dense outputs, or None
        when the dense output needs extra function evaluations (DOP853): then ACA rebuilds
        the interpolant with autograd instead."""
        if self.c_extra:
            return None
        from physode.ode.methods.stepper import dense_cotangents

        return dense_cotangents(self, h, thetas, grad_out)

    def dense_matrix(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return _dense_matrix_cached(self.name, self.P.tobytes(), self.P.shape, dtype, device)

    def __post_init__(self) -> None:
        # Precomputed once as plain tuples: the stage loop (and torch.compile tracing it)
        # reads them without a call.
        object.__setattr__(self, "rows", _sparse(self.a + self.a_extra))
        object.__setattr__(self, "b_row", _sparse((self.b,))[0])


def _sparse(rows: tuple[tuple[float, ...], ...]) -> tuple[tuple[tuple[int, float], ...], ...]:
    """Non-zero entries ``(j, a_j)`` of each row."""
    return tuple(tuple((j, v) for j, v in enumerate(row) if v != 0.0) for row in rows)


@cache
def _dense_matrix_cached(
    name: str, raw: bytes, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    P = np.frombuffer(raw, dtype=np.float64).reshape(shape).copy()
    return torch.as_tensor(P, dtype=dtype, device=device)


def nested_dense(terms: list[np.ndarray]) -> np.ndarray:
    """Expand Hairer's nested dense-output form into the matrix ``P``.

    ``terms = [F0, F1, F2, ...]``, each a coefficient vector over the extended stages, stand
    for ``theta (F0 + (1-theta)(F1 + theta (F2 + (1-theta)(F3 + ...))))`` — the form of
    Hairer's CONTD5 (dopri5) and CONTD8 (DOP853) routines. Returns ``P`` of shape
    (n_extended, degree) with ``B_j(theta) = sum_m P[j, m] theta^(m+1)``.
    """
    n = len(terms[0])
    # poly[d] is the vector coefficient of theta^d, built from the innermost term outwards.
    poly = np.zeros((1, n))
    for i in reversed(range(len(terms))):
        poly = poly.copy()
        poly[0] += terms[i]
        factor = np.array([0.0, 1.0]) if i % 2 == 0 else np.array([1.0, -1.0])
        out = np.zeros((poly.shape[0] + 1, n))
        out[:-1] += factor[0] * poly
        out[1:] += factor[1] * poly
        poly = out
    assert np.allclose(poly[0], 0.0)
    return np.ascontiguousarray(poly[1:].T)


def hermite_terms(b: np.ndarray, n_ext: int, f1_index: int) -> list[np.ndarray]:
    """Cubic Hermite interpolation through (y0, f0) and (y1, f1) in nested form.

    ``y1 - y0 = h sum b_j k_j`` and ``f0 = k_1``, so the interpolant is linear in the stages:
    F0 = b, F1 = e_1 - b, F2 = 2b - e_1 - e_f1 (Hairer, Nørsett & Wanner I, II.6, eq. 6.7).
    """
    bb = np.zeros(n_ext)
    bb[: len(b)] = b
    e1 = np.zeros(n_ext)
    e1[0] = 1.0
    ef = np.zeros(n_ext)
    ef[f1_index] = 1.0
    return [bb, e1 - bb, 2 * bb - e1 - ef]
