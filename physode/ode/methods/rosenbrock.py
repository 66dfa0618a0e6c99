"""Rosenbrock (linearly implicit) methods for stiff problems: ``rosenbrock23`` and ``rodas4``.

A Rosenbrock step replaces the Newton iterations of an implicit Runge–Kutta method by a
few linear solves with one matrix ``I / (h gamma) - J``, so a step is a fixed, smooth
sequence of tensor operations: differentiable by autograd, and rebuilt verbatim by the ACA
reverse sweep. Each step computes the Jacobian (and df/dt for non-autonomous problems) at
its start (:mod:`physode.ode.methods.jacobian`) and factorises once (``lu_factor``); every stage
is one ``lu_solve``. Backpropagating through a step therefore goes through the linear
solves *and* the Jacobian: ACA equals direct backpropagation for these methods too.

Both methods are L-stable and stiffly accurate enough for chemical kinetics; neither needs
the step to be small for stability.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from physode.ode.methods.base import Method
from physode.ode.methods.dense import PolyDense
from physode.ode.methods.jacobian import InverseSolver, LinearSolver, linearize
from physode.ode.methods.step import Step, Time, VectorField, time_tensor
from physode.ode.methods.tableau import FloatArray, Matrix, Row


def _axpy(out: torch.Tensor, v: torch.Tensor, c: Time) -> torch.Tensor:
    """``out + c v``: one fused kernel for a float ``c`` (eager steps), a product for a
    0-d tensor ``c`` (inside the compiled loop, where h is a tensor)."""
    if isinstance(c, torch.Tensor):
        return out + v * c
    return torch.add(out, v, alpha=c)


def _inverse_of(solver: LinearSolver | InverseSolver) -> torch.Tensor | None:
    """The inverse the stages were solved with (compiled loops), for ``Step.factor``."""
    return solver.inv if isinstance(solver, InverseSolver) else None


def _lincomb(base: torch.Tensor | None, coefs: Iterable[float], vecs: list[torch.Tensor],
             scale: Time = 1.0) -> torch.Tensor:
    """``base + sum_j (coefs_j / scale) vecs_j`` over the non-zero coefficients."""
    out = base
    for c, v in zip(coefs, vecs):
        if c != 0.0:
            w = c / scale
            out = v * w if out is None else _axpy(out, v, w)
    assert out is not None
    return out


class _Stiff(Method):
    """What the Rosenbrock methods share: stiff, adaptive, polynomial dense output over
    their stage vectors, no continuous adjoint."""

    adaptive = True
    stiff = True
    linear_dense = True
    # the continuous adjoint's augmented field detaches y for its VJP, so a Jacobian of it
    # taken by autograd would be incomplete; ACA (exact) is the gradient for these methods
    supports_adjoint = False
    nfe_dense = 0
    # the step is tensor arithmetic, a Jacobian from the field's closed-form hook or
    # torch.func, lu_factor and lu_solve: it traces into the compiled whole-solve loops
    compiled_loop = True
    # inside those loops the step inverts I/(h gamma) - J; ACA's rebuild takes it back
    reuses_factor = True

    def step(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
             f0: torch.Tensor) -> Step:
        return self._step(func, t, h, y0, f0, None)

    def step_reusing(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
                     f0: torch.Tensor, factor: torch.Tensor) -> Step:
        return self._step(func, t, h, y0, f0, factor)

    @abstractmethod
    def _step(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor, f0: torch.Tensor,
              known: torch.Tensor | None) -> Step:
        """The step, its stages solved with ``known`` (the inverse of ``I / (h gamma) - J``
        computed before) when given."""


@dataclass(frozen=True)
class RosenbrockTableau:
    """A Rosenbrock method in Hairer & Wanner's transformed variables (Solving ODEs II,
    IV.7; the form their codes ROS4 and RODAS use, which needs no matrix-vector product)::

        (I / (h gamma) - J) U_i = f(t + alpha_i h, y0 + sum_j a_ij U_j)
                                  + sum_j (c_ij / h) U_j + h gamma_i df/dt,
        y1 = y0 + sum_i m_i U_i,        err = sum_i e_i U_i.

    Dense output (Hairer's RODAS, CONTRO): ``y(t + theta h) = (1 - theta) y0 + theta y1 +
    theta (1 - theta) (sum_j d2_j U_j + theta sum_j d3_j U_j)``, with ``+ theta^2 sum_j
    d4_j U_j`` inside the bracket when ``d4`` is given (the form of OrdinaryDiffEq.jl's
    RODAS5P interpolant).
    """

    name: str
    gamma: float
    alpha: Row
    a: Matrix
    c: Matrix
    gammas: Row
    m: Row
    e: Row
    d2: Row
    d3: Row
    order: int
    error_order: int
    dense_order: int = 3
    pi_beta: float = 0.0
    citation: str = ""
    d4: Row | None = None  # a fourth dense-output row (RODAS5P's order-4 interpolant)

    @property
    def stages(self) -> int:
        return len(self.alpha)

    def dense_matrix(self) -> FloatArray:
        """``P`` of the interpolant over the increments ``U_j`` (scale 1):
        ``B_j(theta) = m_j theta + (theta - theta^2) (d2_j + theta d3_j + theta^2 d4_j)``."""
        m, d2, d3 = (np.array(v, dtype=np.float64) for v in (self.m, self.d2, self.d3))
        if self.d4 is None:
            return np.stack([m + d2, d3 - d2, -d3], axis=1)
        d4 = np.array(self.d4, dtype=np.float64)
        return np.stack([m + d2, d3 - d2, d4 - d3, -d4], axis=1)


class Rosenbrock(_Stiff):
    """Steps any :class:`RosenbrockTableau` (Hairer & Wanner II, IV.7)."""

    def __init__(self, tableau: RosenbrockTableau) -> None:
        self.tableau = tableau
        self.name = tableau.name
        self.citation = tableau.citation
        self.order = tableau.order
        self.error_order = tableau.error_order
        self.dense_order = tableau.dense_order
        self.pi_beta = tableau.pi_beta
        # stage 1 reuses f0; the Jacobian (one evaluation plus a batched vector-Jacobian
        # product) is not counted in nfe
        self.nfe_per_step = tableau.stages - 1
        self.n_extended = tableau.stages
        self.interpolant = PolyDense(tableau.dense_matrix(), by_h=False)

    def _step(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor, f0: torch.Tensor,
              known: torch.Tensor | None) -> Step:
        tab = self.tableau
        lin = linearize(func, t, y0)
        solve = lin.factor(1.0 / (h * tab.gamma), known)
        U: list[torch.Tensor] = []
        for i in range(tab.stages):
            if i == 0:
                fi = f0
            else:
                yi = _lincomb(y0, tab.a[i][:i], U)
                fi = func(time_tensor(t + tab.alpha[i] * h, y0), yi)
            rhs = _lincomb(fi, tab.c[i][:i], U, h) if i else fi
            if lin.ft is not None and tab.gammas[i] != 0.0:
                rhs = _axpy(rhs, lin.ft, h * tab.gammas[i])
            U.append(solve(rhs))
        y1 = _lincomb(y0, tab.m, U)
        err = _lincomb(None, tab.e, U)
        return Step(y1, err, None, U, _inverse_of(solve))


def _lower(rows: list[list[float]], s: int) -> Matrix:
    return tuple(tuple(float(x) for x in r) + (0.0,) * (s - len(r)) for r in rows)


# Hairer's RODAS, coefficient set METH = 1 (ROCOE in rodas.f; Hairer & Wanner II, VI.4):
# six stages, stiffly accurate (stages 5 and 6 sit at t + h, the last one gives y1 and its
# increment U_6 is the error estimate of the embedded order-3 solution).
_RA = [
    [],
    [1.544],
    [0.9466785280815826, 0.2557011698983284],
    [3.314825187068521, 2.896124015972201, 0.9986419139977817],
    [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950],
]
_RA.append(_RA[4] + [1.0])
_RC = [
    [],
    [-5.6688],
    [-2.430093356833875, -0.2063599157091915],
    [-0.1073529058151375, -9.594562251023355, -20.47028614809616],
    [7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160],
    [8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136,
     -6.058818238834054],
]

RODAS4_TABLEAU = RosenbrockTableau(
    name="rodas4",
    gamma=0.25,
    alpha=(0.0, 0.386, 0.21, 0.63, 1.0, 1.0),
    a=_lower(_RA, 6),
    c=_lower(_RC, 6),
    gammas=(0.25, -0.1043, 0.1035, -0.3620000000000023e-01, 0.0, 0.0),
    m=(*_RA[4], 1.0, 1.0),
    e=(0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    d2=(10.12623508344586, -7.487995877610167, -34.80091861555747, -7.992771707568823,
        1.025137723295662, 0.0),
    d3=(-0.6762803392801253, 6.087714651680015, 16.43084320892478, 24.76722511418386,
        -6.594389125716872, 0.0),
    order=4, error_order=3, dense_order=3,
    citation="RODAS: Hairer & Wanner, Solving Ordinary Differential Equations II, 2nd ed. "
             "(Springer 1996), IV.7 and VI.4; coefficients (METH=1) and dense output of "
             "Hairer's Fortran code RODAS (rodas.f). L-stable, stiffly accurate, 4(3).")


RODAS4 = Rosenbrock(RODAS4_TABLEAU)


class Rosenbrock23(_Stiff):
    """Shampine & Reichelt's modified Rosenbrock triple, MATLAB's ``ode23s``
    (L. F. Shampine & M. W. Reichelt, "The MATLAB ODE Suite", SIAM J. Sci. Comput. 18
    (1997) 1-22, Sect. 4.1), with d = 1 / (2 + sqrt 2), e32 = 6 + sqrt 2 and
    W = I - h d J:

        k1 = W^-1 (f0 + h d f_t),            f1 = f(t + h/2, y0 + h/2 k1),
        k2 = W^-1 (f1 - k1) + k1,            y1 = y0 + h k2,       f2 = f(t + h, y1),
        k3 = W^-1 (f2 - e32 (k2 - f1) - 2 (k1 - f0) + h d f_t),
        err = h/6 (k1 - 2 k2 + k3).

    Order 2 (L-stable), error estimate of order 3; f2 is the next step's f0 (FSAL).
    Dense output (ibid.): ``y0 + h (theta (1-theta) k1 + theta (theta - 2d) k2) / (1 - 2d)``.
    """

    name = "rosenbrock23"
    order = 2
    error_order = 2
    dense_order = 2
    fsal = True
    nfe_per_step = 2
    n_extended = 2
    d = 1.0 / (2.0 + math.sqrt(2.0))
    e32 = 6.0 + math.sqrt(2.0)
    citation = ("Shampine & Reichelt, 'The MATLAB ODE Suite', SIAM J. Sci. Comput. 18 "
                "(1997) 1-22, Sect. 4.1 (ode23s): Rosenbrock 2(3), L-stable.")

    def __init__(self) -> None:
        r = 1.0 / (1.0 - 2.0 * self.d)
        self.interpolant = PolyDense(np.array([[r, -r], [-2.0 * self.d * r, r]]), by_h=True)

    def _step(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor, f0: torch.Tensor,
              known: torch.Tensor | None) -> Step:
        hd = h * self.d
        lin = linearize(func, t, y0)
        lu = lin.factor(1.0 / hd, known)

        def solve(rhs: torch.Tensor) -> torch.Tensor:  # W^-1 rhs = (I/(hd) - J)^-1 rhs/(hd)
            return lu(rhs) / hd

        r1 = f0 if lin.ft is None else _axpy(f0, lin.ft, hd)
        k1 = solve(r1)
        f1 = func(time_tensor(t + 0.5 * h, y0), _axpy(y0, k1, 0.5 * h))
        k2 = solve(f1 - k1) + k1
        y1 = _axpy(y0, k2, h)
        f2 = func(time_tensor(t + h, y0), y1)
        r3 = f2 - self.e32 * (k2 - f1) - 2.0 * (k1 - f0)
        if lin.ft is not None:
            r3 = _axpy(r3, lin.ft, hd)
        k3 = solve(r3)
        err = (k1 - 2.0 * k2 + k3) * (h / 6.0)
        return Step(y1, err, None, [k1, k2, f2], _inverse_of(lu))

    def f1(self, func: VectorField, t1: Time, step: Step) -> torch.Tensor | None:
        return step.ks[2]

    def extended_stages(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
                        ks: list[torch.Tensor], f1: torch.Tensor) -> list[torch.Tensor]:
        return [ks[0], ks[1]]


ROSENBROCK23 = Rosenbrock23()

# RODAS5P (Steinebach, BIT Numer. Math. 63:27, 2023): eight stages, stiffly accurate
# (stages 6-8 at t + h; y1 is the last stage's argument plus U_8, and U_8 is the error of
# the embedded order-4 solution), order 5, an order-4 dense output, and coefficients chosen
# for tight tolerances and for the Prothero-Robinson test (no order reduction on stiff
# problems with time-dependent forcing). Coefficients as in OrdinaryDiffEq.jl's
# Rodas5PTableau, in the same transformed variables.
_R5A = [
    [],
    [3.0],
    [2.849394379747939, 0.45842242204463923],
    [-6.954028509809101, 2.489845061869568, -10.358996098473584],
    [2.8029986275628964, 0.5072464736228206, -0.3988312541770524, -0.04721187230404641],
    [-7.502846399306121, 2.561846144803919, -11.627539656261098, -0.18268767659942256,
     0.030198172008377946],
]
_R5A.append(_R5A[5] + [1.0])
_R5A.append(_R5A[5] + [1.0, 1.0])
_R5C = [
    [],
    [-14.155112264123755],
    [-17.97296035885952, -2.859693295451294],
    [147.12150275711716, -1.41221402718213, 71.68940251302358],
    [165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306],
    [24.854864614690072, -3.0009227002832186, 47.4931110020768, 5.5814197821558125,
     -0.6610691825249471],
    [30.91273214028599, -3.1208243349937974, 77.79954646070892, 34.28646028294783,
     -19.097331116725623, -28.087943162872662],
    [37.80277123390563, -3.2571969029072276, 112.26918849496327, 66.9347231244047,
     -40.06618937091002, -54.66780262877968, -9.48861652309627],
]

RODAS5P_TABLEAU = RosenbrockTableau(
    name="rodas5p",
    gamma=0.21193756319429014,
    alpha=(0.0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716,
           0.4288403609558664, 1.0, 1.0, 1.0),
    a=_lower(_R5A, 8),
    c=_lower(_R5C, 8),
    gammas=(0.21193756319429014, -0.42387512638858027, -0.3384627126235924,
            1.8046452872882734, 2.325825639765069, 0.0, 0.0, 0.0),
    m=(*_R5A[5], 1.0, 1.0, 1.0),
    e=(0.0,) * 7 + (1.0,),
    d2=(25.948786856663858, -2.5579724845846235, 10.433815404888879, -2.3679251022685204,
        0.524948541321073, 1.1241088310450404, 0.4272876194431874, -0.17202221070155493),
    d3=(-9.91568850695171, -0.9689944594115154, 3.0438037242978453, -24.495224566215796,
        20.176138334709044, 15.98066361424651, -6.789040303419874, -6.710236069923372),
    d4=(11.419903575922262, 2.8879645146136994, 72.92137995996029, 80.12511834622643,
        -52.072871366152654, -59.78993625266729, -0.15582684282751913, 4.883087185713722),
    order=5, error_order=4, dense_order=4,
    citation="RODAS5P: G. Steinebach, Construction of Rosenbrock-Wanner method Rodas5P and "
             "numerical benchmarks within the Julia Differential Equations package, BIT "
             "Numer. Math. 63:27 (2023); coefficients and dense output as in "
             "OrdinaryDiffEq.jl. L-stable, stiffly accurate, 5(4).")

RODAS5P = Rosenbrock(RODAS5P_TABLEAU)

ROSENBROCK_METHODS: dict[str, Method] = {m.name: m for m in (ROSENBROCK23, RODAS4, RODAS5P)}
