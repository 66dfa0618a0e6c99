"""Butcher tableaux as validated data, and the builders of their dense-output matrices.

A :class:`Tableau` holds an explicit Runge–Kutta method's coefficients: nodes ``c``, the
strictly lower-triangular matrix ``a``, weights ``b``, embedded error weights
``e = b - b_hat`` and the dense-output matrix ``P``. It checks at construction the
consistency conditions every explicit RK method satisfies (Hairer, Nørsett & Wanner,
*Solving ODEs I*, II.1, eq. 1.9 and II.4): each row of ``a`` sums to its node ``c_i``,
``sum(b) = 1``, the embedded weights ``b - e`` sum to 1 as well, and the dense output at
theta = 1 reproduces ``b``. No stepping here: :class:`physode.ode.methods.explicit.ExplicitRK`
steps any tableau.

Dense output is written over the *extended* stage list ``K = [k_1 .. k_s, f(t+h, y1)
(unless FSAL), extra dense stages]`` in the form of :mod:`physode.ode.methods.dense`:
``y(t + theta h) = y + h sum_j B_j(theta) K_j``, ``B_j(theta) = sum_m P[j, m] theta^(m+1)``.
Cubic Hermite interpolation, the Dormand–Prince and DOP853 continuous extensions and
Tsitouras' polynomials all fit it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from physode.errors import InvalidArgument

Row = tuple[float, ...]
Matrix = tuple[Row, ...]
FloatArray = npt.NDArray[np.float64]

_TOL = 1e-12


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge–Kutta method as data.

    ``order`` is the order of ``b``; ``error_order`` the order of the embedded solution (the
    step-size controller uses the exponent ``1/(error_order+1)``); ``e`` is None for
    fixed-step methods. ``fsal``: the last stage is evaluated at (t+h, y1) ("first same as
    last": its row of ``a`` equals ``b``), so the next step's first stage is free. ``e3``:
    DOP853's second error estimate (Hairer's 8(5,3) norm). ``a_extra``/``c_extra``: stages
    evaluated only for dense output, after the step is accepted (their rows span the
    extended stage list before them). ``dense_order``: order q of the continuous extension
    (local error O(h^(q+1)), Hairer, Nørsett & Wanner I, II.6); cubic Hermite has q = 3.
    """

    name: str
    c: Row
    a: Matrix
    b: Row
    order: int
    P: FloatArray = field(repr=False, compare=False)
    e: Row | None = None
    error_order: int | None = None
    fsal: bool = False
    dense_order: int = 3
    e3: Row | None = None
    a_extra: Matrix = ()
    c_extra: Row = ()
    pi_beta: float = 0.0
    citation: str = ""

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def n_extended(self) -> int:
        """Length of the extended stage list the dense output combines."""
        return self.stages + (0 if self.fsal else 1) + len(self.c_extra)

    @property
    def f1_index(self) -> int:
        """Index of f(t+h, y1) in the extended stage list."""
        return self.stages - 1 if self.fsal else self.stages

    def __post_init__(self) -> None:
        object.__setattr__(self, "P", np.ascontiguousarray(self.P, dtype=np.float64))
        problem = _problem(self)
        if problem is not None:
            raise InvalidArgument(f"tableau {self.name!r}: {problem}")


def _sums_to(row: Sequence[float], target: float) -> bool:
    scale = max(1.0, sum(abs(x) for x in row))
    return abs(sum(row) - target) <= _TOL * scale


def _problem(tab: Tableau) -> str | None:
    """The first inconsistency of ``tab`` as a phrase, or None."""
    s = tab.stages
    if s == 0 or len(tab.a) != s or any(len(r) != s for r in tab.a):
        return f"a must be a square {s} x {s} matrix (one row per node c)"
    for i, row in enumerate(tab.a):
        if any(x != 0.0 for x in row[i:]):
            return f"a must be strictly lower triangular (explicit), row {i} is {row}"
        if not _sums_to(row, tab.c[i]):
            return f"row {i} of a sums to {sum(row)!r}, but c[{i}] = {tab.c[i]!r}"
    if len(tab.b) != s or not _sums_to(tab.b, 1.0):
        return f"b must have {s} weights summing to 1, got {tab.b} (sum {sum(tab.b)!r})"
    for label, e in (("e", tab.e), ("e3", tab.e3)):
        if e is None:
            continue
        bhat = [bi - ei for bi, ei in zip(tab.b, e)]
        if len(e) != s or not _sums_to(bhat, 1.0):
            return (f"the embedded weights b - {label} must have {s} entries summing to 1, "
                    f"got sum {sum(bhat)!r}")
    if (tab.e is None) != (tab.error_order is None):
        return "give both e and error_order (an adaptive method) or neither"
    if tab.fsal and (tab.c[-1] != 1.0 or any(abs(x - y) > _TOL for x, y in
                                            zip(tab.a[-1], tab.b))):
        return "fsal needs c[-1] = 1 and the last row of a equal to b"
    if len(tab.a_extra) != len(tab.c_extra):
        return "a_extra and c_extra must have one entry per extra dense stage"
    for i, (row, ci) in enumerate(zip(tab.a_extra, tab.c_extra)):
        if not _sums_to(row, ci):
            return f"extra dense row {i} sums to {sum(row)!r}, but c_extra[{i}] = {ci!r}"
    if tab.P.ndim != 2 or tab.P.shape[0] != tab.n_extended:
        return (f"P must have one row per extended stage ({tab.n_extended}), got shape "
                f"{tab.P.shape}")
    at_1 = tab.P.sum(axis=1)  # B_j(1): the dense output at theta = 1 must be y1
    want = np.zeros(tab.n_extended)
    want[:s] = tab.b
    if not np.allclose(at_1, want, rtol=0, atol=1e-10):
        return "the dense output at theta = 1 does not reproduce b (P.sum(axis=1) != b)"
    return None


def nested_dense(terms: list[FloatArray]) -> FloatArray:
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


def hermite_terms(b: npt.ArrayLike, n_ext: int, f1_index: int) -> list[FloatArray]:
    """Cubic Hermite interpolation through (y0, f0) and (y1, f1) in nested form.

    ``y1 - y0 = h sum b_j k_j`` and ``f0 = k_1``, so the interpolant is linear in the stages:
    F0 = b, F1 = e_1 - b, F2 = 2b - e_1 - e_f1 (Hairer, Nørsett & Wanner I, II.6, eq. 6.7).
    """
    b = np.asarray(b, dtype=np.float64)
    bb = np.zeros(n_ext)
    bb[: len(b)] = b
    e1 = np.zeros(n_ext)
    e1[0] = 1.0
    ef = np.zeros(n_ext)
    ef[f1_index] = 1.0
    return [bb, e1 - bb, 2 * bb - e1 - ef]


__all__ = ["Tableau", "hermite_terms", "nested_dense"]
