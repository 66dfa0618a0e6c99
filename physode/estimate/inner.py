"""A Levenberg-Marquardt solve of a fit problem with one coordinate held fixed: the
corrector of profile likelihoods (:mod:`physode.estimate.profiles`).

Uses ``scipy.optimize.least_squares`` (trust-region reflective, Branch, Coleman & Li,
SIAM J. Sci. Comput. 21:1-23, 1999; Jacobian-scaled, Moré 1978) on the weighted residuals
and their exact Jacobian from forward sensitivities
(:meth:`~physode.estimate.problem.FitProblem.residuals_and_jacobian`), the column of the
fixed coordinate dropped. As in :mod:`physode.estimate.optimizers`, a solve that fails is
an infinite residual, so the trust region shrinks away from it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from physode.errors import SolverError
from physode.estimate.problem import FitProblem

#: Relative tolerances of the inner solve: tight, since the profile's crossing is located
#: to ~1e-5 of its distance and a loose inner optimum biases Delta upwards.
INNER_TOL = 1e-10


def objective(chi2: float, problem: FitProblem) -> float:
    """``D`` whose differences are -2 Delta log L: chi2 with known sigma; ``N ln chi2``
    when one shared noise level is estimated (and profiled out of the likelihood)."""
    if not math.isfinite(chi2):
        return math.inf
    if problem.sigma_estimated:
        return problem.n_data * math.log(max(chi2, np.finfo(float).tiny))
    return chi2


class InnerSolver:
    """Minimise chi2 over every coordinate of the fitted vector but ``fixed``."""

    def __init__(self, problem: FitProblem, fixed: int | None, max_nfev: int = 100) -> None:
        self.problem = problem
        self.fixed = fixed
        self.max_nfev = max_nfev
        self.n_solves = 0
        self.nfev = 0

    def solve(self, x0: np.ndarray) -> tuple[np.ndarray, float, np.ndarray | None]:
        """``(point, chi2, full Jacobian there)`` from the start ``x0`` (whose fixed
        coordinate is kept); chi2 is inf when the model cannot be solved at any point
        tried."""
        from scipy.optimize import least_squares

        self.n_solves += 1
        problem = self.problem
        n = x0.size
        free = np.ones(n, dtype=bool)
        if self.fixed is not None:
            free[self.fixed] = False
        m = problem.n_residuals
        cache: dict[str, Any] = {}
        best: dict[str, Any] = {"chi2": math.inf, "x": x0.copy(), "J": None}

        def full(z: np.ndarray) -> np.ndarray:
            x = x0.copy()
            x[free] = z
            return x

        def fun(z: np.ndarray) -> np.ndarray:
            if cache.get("z") is not None and np.array_equal(cache["z"], z):
                return np.asarray(cache["r"])
            x = full(z)
            problem.set_vector(x)
            self.nfev += 1
            try:
                ev = problem.residuals_and_jacobian()
                r, J = ev.r, ev.J
            except SolverError:
                r, J = np.full(m, np.inf), None
            chi2 = problem.chi2(r)
            if not math.isfinite(chi2):
                r, J = np.full(m, np.inf), None
            cache.update(z=np.array(z, copy=True), r=r, J=J)
            if chi2 < best["chi2"]:
                best.update(chi2=chi2, x=x.copy(), J=J)
            return np.asarray(r)

        def jac(z: np.ndarray) -> np.ndarray:
            if cache.get("z") is None or not np.array_equal(cache["z"], z):
                fun(z)
            J = cache["J"]
            if J is None:
                raise SolverError("solve failed at an accepted point", math.nan)
            return np.asarray(J[:, free])

        z0 = x0[free]
        r0 = fun(z0)
        if not np.all(np.isfinite(r0)) or not free.any():
            return best["x"], best["chi2"], best["J"]
        try:
            least_squares(fun, z0, jac=jac, method="trf", x_scale="jac", ftol=INNER_TOL,
                          xtol=INNER_TOL, gtol=INNER_TOL, max_nfev=self.max_nfev)
        except SolverError:
            pass  # keep the best point met
        problem.set_vector(best["x"])
        return best["x"], best["chi2"], best["J"]


__all__ = ["INNER_TOL", "InnerSolver", "objective"]
