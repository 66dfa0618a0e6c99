"""Explicit Runge–Kutta methods: the stepper family that runs any Butcher tableau, and its tableaux.

``rk_step`` evaluates the stages of a :class:`~physode.ode.methods.tableau.Tableau` as a
pure function of tensors and returns the new state, the embedded error estimate and the
stages. The forward solve, the direct (backprop) gradient and the ACA reverse sweep all call
exactly this function, so the ACA rebuild of an accepted step reproduces the forward step
bit for bit, and its local backward is the same graph that direct backpropagation builds.

Coefficients are facts from the literature (cited per method); the convergence-order and
order-condition tests in ``tests/ode/test_methods_order.py`` prove them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction as Fr

import numpy as np
import torch

from physode.ode.methods._dop853_data import E3, E5, A, B, C, D
from physode.ode.methods.base import Method
from physode.ode.methods.dense import PolyDense
from physode.ode.methods.step import Step, Time, VectorField, time_tensor
from physode.ode.methods.tableau import (
    Matrix,
    Row,
    Tableau,
    hermite_terms,
    nested_dense,
)

SparseRow = tuple[tuple[int, float], ...]


def _sparse(rows: Matrix) -> tuple[SparseRow, ...]:
    """Non-zero entries ``(j, a_j)`` of each row."""
    return tuple(tuple((j, v) for j, v in enumerate(row) if v != 0.0) for row in rows)


def _axpy(acc: torch.Tensor | None, k: torch.Tensor, scale: Time) -> torch.Tensor:
    """``acc + scale * k``: one fused add with a float scale (eager), a product with a
    tensor scale (compiled, where the compiler fuses it)."""
    if isinstance(scale, torch.Tensor):
        return k * scale if acc is None else acc + k * scale
    return k * scale if acc is None else torch.add(acc, k, alpha=scale)


def _combine(y: torch.Tensor, h: Time, row: SparseRow, ks: list[torch.Tensor]) -> torch.Tensor:
    """``y + h * sum_j row_j ks[j]`` over the non-zero entries ``row = ((j, a_j), ...)``."""
    out = y
    for j, coef in row:
        out = _axpy(out, ks[j], h * coef)
    return out


def _weighted(h: Time, weights: Row, ks: list[torch.Tensor]) -> torch.Tensor:
    acc = None
    for w, k in zip(weights, ks):
        if w != 0.0:
            acc = _axpy(acc, k, h * w)
    assert acc is not None
    return acc


class ExplicitRK(Method):
    """The explicit Runge–Kutta family: steps any :class:`Tableau` (Hairer, Nørsett &
    Wanner I, II.1), with its embedded error estimate (II.4) and its dense output (II.6)."""

    linear_dense = True
    functional_step = True

    def __init__(self, tableau: Tableau) -> None:
        self.tableau = tableau
        self.name = tableau.name
        self.citation = tableau.citation
        self.order = tableau.order
        self.error_order = tableau.error_order
        self.dense_order = tableau.dense_order
        self.adaptive = tableau.e is not None
        # physode.ode.compiled_loop runs adaptive tableaux whose dense output needs no extra
        # evaluations (DOP853's three extra stages keep it on the per-step path)
        self.compiled_loop = self.adaptive and not tableau.c_extra
        self.fsal = tableau.fsal
        self.pi_beta = tableau.pi_beta
        self.nfe_per_step = tableau.stages - 1  # k_1 is the previous step's f1
        self.nfe_dense = len(tableau.c_extra)  # DOP853's three extra dense stages
        self.n_extended = tableau.n_extended
        self.interpolant = PolyDense(tableau.P, by_h=True)
        # precomputed once as plain tuples: the stage loop (and torch.compile tracing it)
        # reads them without a call
        self.stages = tableau.stages
        self.c: Row = tableau.c
        self.c_extra: Row = tableau.c_extra
        self.rows = _sparse(tableau.a + tableau.a_extra)
        self.b_row = _sparse((tableau.b,))[0]
        self.e = tableau.e
        self.e3 = tableau.e3

    def step(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
             f0: torch.Tensor) -> Step:
        return rk_step(func, self, t, h, y0, f0)

    def f1(self, func: VectorField, t1: Time, step: Step) -> torch.Tensor | None:
        """f(t+h, y1) if the step already has it (FSAL), else None."""
        return step.ks[-1] if self.fsal else None

    def extended_stages(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
                        ks: list[torch.Tensor], f1: torch.Tensor) -> list[torch.Tensor]:
        """The stage list the dense output is written over: stages, f1, extra dense stages."""
        ext = list(ks) if self.fsal else [*ks, f1]
        for row, c in zip(self.rows[self.stages:], self.c_extra):
            ext.append(func(time_tensor(t + c * h, y0), _combine(y0, h, row, ext)))
        return ext


def rk_step(func: VectorField, method: ExplicitRK, t: Time, h: Time, y0: torch.Tensor,
            f0: torch.Tensor) -> Step:
    """One step of size ``h`` from ``(t, y0)``, with ``f0 = func(t, y0)`` already known."""
    rows = method.rows
    c = method.c
    ks = [f0]
    yi = y0
    for i in range(1, method.stages):
        yi = _combine(y0, h, rows[i], ks)
        ks.append(func(time_tensor(t + c[i] * h, y0), yi))
    # FSAL: the last stage is evaluated at y1 itself (its row of ``a`` equals ``b``).
    y1 = yi if method.fsal else _combine(y0, h, method.b_row, ks)
    err = _weighted(h, method.e, ks) if method.e is not None else None
    err3 = _weighted(h, method.e3, ks) if method.e3 is not None else None
    return Step(y1, err, err3, ks)


# --- tableaux ------------------------------------------------------------------------------

Coef = float | Fr


def _f(values: Iterable[Coef]) -> Row:
    return tuple(float(v) for v in values)


def _rows(rows: Sequence[Sequence[Coef]]) -> Matrix:
    """Pad the ragged lower-triangular rows of ``a`` into a square tuple matrix."""
    n = len(rows)
    return tuple(_f(list(r) + [0] * (n - len(r))) for r in rows)


def _with_hermite(name: str, c: Sequence[Coef], a: Sequence[Sequence[Coef]], b: Sequence[Coef],
                  order: int, *, e: Sequence[Coef] | None = None, error_order: int | None = None,
                  fsal: bool = False, pi_beta: float = 0.0, citation: str) -> Tableau:
    """A tableau whose dense output is cubic Hermite (order 3 interpolant)."""
    s = len(c)
    n_ext = s if fsal else s + 1
    f1_index = s - 1 if fsal else s
    P = nested_dense(hermite_terms(_f(b), n_ext, f1_index))
    return Tableau(name=name, c=_f(c), a=_rows(a), b=_f(b), order=order,
                   e=None if e is None else _f(e), error_order=error_order, fsal=fsal,
                   P=P, dense_order=3, pi_beta=pi_beta, citation=citation)


EULER = _with_hermite(
    "euler", [0], [[]], [1], 1,
    citation="Euler's method; Hairer, Nørsett & Wanner, Solving ODEs I, II.1.")

MIDPOINT = _with_hermite(
    "midpoint", [0, Fr(1, 2)], [[], [Fr(1, 2)]], [0, 1], 2,
    citation="Explicit midpoint rule (Runge 1895); Hairer, Nørsett & Wanner I, II.1.")

RK4 = _with_hermite(
    "rk4", [0, Fr(1, 2), Fr(1, 2), 1],
    [[], [Fr(1, 2)], [0, Fr(1, 2)], [0, 0, 1]],
    [Fr(1, 6), Fr(1, 3), Fr(1, 3), Fr(1, 6)], 4,
    citation="Classical Runge–Kutta method (Kutta 1901); Hairer, Nørsett & Wanner I, II.1.")

HEUN_EULER = _with_hermite(
    "heun_euler", [0, 1], [[], [1]], [Fr(1, 2), Fr(1, 2)], 2,
    e=[Fr(1, 2) - 1, Fr(1, 2)], error_order=1,
    citation="Heun's method with embedded Euler, 2(1); Hairer, Nørsett & Wanner I, II.4.")

BOSH3 = _with_hermite(
    "bosh3", [0, Fr(1, 2), Fr(3, 4), 1],
    [[], [Fr(1, 2)], [0, Fr(3, 4)], [Fr(2, 9), Fr(1, 3), Fr(4, 9)]],
    [Fr(2, 9), Fr(1, 3), Fr(4, 9), 0], 3,
    e=[Fr(2, 9) - Fr(7, 24), Fr(1, 3) - Fr(1, 4), Fr(4, 9) - Fr(1, 3), -Fr(1, 8)],
    error_order=2, fsal=True,
    citation="Bogacki & Shampine, 'A 3(2) pair of Runge-Kutta formulas', "
             "Appl. Math. Lett. 2 (1989) 321-325.")

# --- Dormand–Prince 5(4) -------------------------------------------------------------------
_DP_C: list[Coef] = [0, Fr(1, 5), Fr(3, 10), Fr(4, 5), Fr(8, 9), 1, 1]
_DP_B: list[Coef] = [Fr(35, 384), 0, Fr(500, 1113), Fr(125, 192), Fr(-2187, 6784), Fr(11, 84), 0]
_DP_A: list[list[Coef]] = [
    [],
    [Fr(1, 5)],
    [Fr(3, 40), Fr(9, 40)],
    [Fr(44, 45), Fr(-56, 15), Fr(32, 9)],
    [Fr(19372, 6561), Fr(-25360, 2187), Fr(64448, 6561), Fr(-212, 729)],
    [Fr(9017, 3168), Fr(-355, 33), Fr(46732, 5247), Fr(49, 176), Fr(-5103, 18656)],
    _DP_B[:6],
]
_DP_BHAT: list[Coef] = [Fr(5179, 57600), 0, Fr(7571, 16695), Fr(393, 640), Fr(-92097, 339200),
            Fr(187, 2100), Fr(1, 40)]
# Shampine (1986) dense output, as in Hairer's DOPRI5 (CONTD5): coefficients d_j.
_DP_D: list[Coef] = [Fr(-12715105075, 11282082432), 0, Fr(87487479700, 32700410799),
         Fr(-10690763975, 1880347072), Fr(701980252875, 199316789632),
         Fr(-1453857185, 822651844), Fr(69997945, 29380423)]


def _dopri5() -> Tableau:
    terms = hermite_terms(_f(_DP_B), 7, 6) + [np.array(_f(_DP_D), dtype=np.float64)]
    return Tableau(
        name="dopri5", c=_f(_DP_C), a=_rows(_DP_A), b=_f(_DP_B), order=5,
        e=_f(bi - bh for bi, bh in zip(_DP_B, _DP_BHAT)), error_order=4, fsal=True,
        P=nested_dense(terms), dense_order=4, pi_beta=0.0,
        citation="Dormand & Prince, 'A family of embedded Runge-Kutta formulae', J. Comput. "
                 "Appl. Math. 6 (1980) 19-26; dense output of Shampine, Math. Comp. 46 "
                 "(1986) 135-150, as in Hairer, Nørsett & Wanner I, II.6 (DOPRI5).")


DOPRI5 = _dopri5()

# --- Tsitouras 5(4) ------------------------------------------------------------------------
_TS_C: list[Coef] = [0, 0.161, 0.327, 0.9, 0.9800255409045097, 1, 1]
_TS_B: list[Coef] = [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
         -3.290069515436081, 2.324710524099774, 0]
_TS_A: list[list[Coef]] = [
    [],
    [0.161],
    [-0.008480655492356989, 0.335480655492357],
    [2.8971530571054935, -6.359448489975075, 4.3622954328695815],
    [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525],
    [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
     -0.028269050394068383],
    _TS_B[:6],
]
# Embedded 4th-order weights b_hat (the paper's table lists b - b_hat under that name).
_TS_BHAT: list[Coef] = [0.09468075576583945, 0.009183565540343254, 0.4877705284247616,
            1.234297566930479, -2.7077123499835256, 1.866628418170587, 0.015151515151515152]
# Tsitouras' 4th-order continuous extension b_j(theta), coefficients of theta^1..theta^4.
_TS_P = np.array([
    [1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216],
    [0.0, 0.13169999999999998, -0.2234, 0.1017],
    [0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253],
    [0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902],
    [0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
    [0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661],
    [0.0, 1.5, -4.0, 2.5],
])

TSIT5 = Tableau(
    name="tsit5", c=_f(_TS_C), a=_rows(_TS_A), b=_f(_TS_B), order=5,
    e=_f(bi - bh for bi, bh in zip(_TS_B, _TS_BHAT)), error_order=4, fsal=True,
    P=_TS_P, dense_order=4, pi_beta=0.0,
    citation="Tsitouras, 'Runge-Kutta pairs of order 5(4) satisfying only the first column "
             "simplifying assumption', Comput. Math. Appl. 62 (2011) 770-775.")


def _dopri8() -> Tableau:
    s = 12
    # extended stages: k_1..k_12, f(t+h, y1) (index 12), three extra dense stages (13..15)
    terms = hermite_terms(B, 16, s) + [row for row in D]
    return Tableau(
        name="dopri8", c=_f(C[:s]), a=tuple(_f(r[:s]) for r in A[:s]), b=_f(B), order=8,
        e=_f(E5[:s]), error_order=7, e3=_f(E3[:s]), fsal=False,
        a_extra=tuple(_f(r) for r in A[s + 1:]), c_extra=_f(C[s + 1:]),
        P=nested_dense(terms), dense_order=7, pi_beta=0.0,
        citation="Dormand & Prince, 'High order embedded Runge-Kutta formulae', J. Comput. "
                 "Appl. Math. 7 (1981) 67-75; error estimate 8(5,3) and 7th-order dense "
                 "output of Hairer's DOP853, Hairer, Nørsett & Wanner I, II.10.")


DOPRI8 = _dopri8()

EXPLICIT_TABLEAUX: tuple[Tableau, ...] = (EULER, MIDPOINT, RK4, HEUN_EULER, BOSH3, DOPRI5,
                                           TSIT5, DOPRI8)

EXPLICIT_METHODS: dict[str, ExplicitRK] = {tab.name: ExplicitRK(tab) for tab in EXPLICIT_TABLEAUX}
