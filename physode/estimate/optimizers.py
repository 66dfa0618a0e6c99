"""The optimisers behind :func:`physode.fit`: L-BFGS, Adam and Levenberg-Marquardt.

Every optimiser works on the unconstrained fitted vector of a
:class:`~physode.estimate.problem.FitProblem` (so bounds and positivity hold by construction)
and reports through a :class:`Tracker`, which keeps the best point ever evaluated, the
loss history, the counters and the progress bar. A solve that fails
(:class:`~physode.errors.SolverError`: step-size underflow, non-finite state, too many
steps) is an infinite loss: the line search or trust region backs off. Ctrl-C
(KeyboardInterrupt) ends the run; the best point so far is restored and marked
interrupted.

- ``lbfgs``: L-BFGS with a strong-Wolfe line search (Nocedal & Wright, *Numerical
  Optimization*, 2nd ed., 2006, Alg. 7.5 and Alg. 3.5/3.6), ``torch.optim.LBFGS`` one
  iteration per call so the stop criteria and progress are ours. A failed solve returns
  loss = inf and a NaN gradient: the interpolation of the zoom phase then bisects towards
  the last good point.
- ``adam``: Adam (Kingma & Ba, ICLR 2015) with a cosine learning-rate schedule
  (Loshchilov & Hutter, ICLR 2017); a failed solve restores the best point and halves the
  learning rate.
- ``lm``: Levenberg-Marquardt (Moré, "The Levenberg-Marquardt algorithm: implementation
  and theory", Lecture Notes in Mathematics 630, 1978) as implemented by
  ``scipy.optimize.least_squares`` — "trf" by default (a trust-region reflective variant
  that shrinks the region on non-finite residuals), or MINPACK's "lm" — on the exact
  residual Jacobian from forward sensitivities (:mod:`physode.estimate.sensitivity`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from physode.errors import SolverError
from physode.estimate.problem import FitProblem

Callback = Callable[[dict[str, Any]], bool | None]


#: How a run ended. Only "converged" (a tolerance test was met) is a success.
STATUSES = ("converged", "max_iter", "stalled", "failed", "stopped", "interrupted")


@dataclass
class RunResult:
    """Outcome of one optimiser run (one start)."""

    x: np.ndarray
    chi2: float
    stop_reason: str
    status: str = "converged"
    niter: int = 0
    nfev: int = 0
    ngrad: int = 0
    history: list[float] = field(default_factory=list)
    #: the last solver failure met during the run (message), if any
    error: str | None = None

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"

    @property
    def success(self) -> bool:
        """A convergence criterion was met at a point where the model can be solved."""
        return self.status == "converged" and math.isfinite(self.chi2)


COMPILING = "compiling the solver (one-off)"
"""What the progress bar says until the first iteration of a compiled fit completes."""


class Tracker:
    """Best point, counters, loss history (chi2 per iteration) and the tqdm bar."""

    def __init__(self, problem: FitProblem, max_iter: int, progress: bool, desc: str,
                 callback: Callback | None = None) -> None:
        self.problem = problem
        self.best_x = problem.get_vector()
        self.best_chi2 = math.inf
        self.history: list[float] = []
        self.nfev = self.ngrad = self.niter = 0
        self.callback = callback
        self.stop_requested = False
        self.last_error: str | None = None
        self.bar: Any = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=max_iter, desc=desc, file=sys.stderr, leave=False,
                            dynamic_ncols=True)
            if getattr(problem, "compile", False) is True:
                # the first solves build the compiled loops (seconds to minutes): say so
                # rather than sit at 0 % (the first iteration's postfix replaces it)
                self.bar.set_postfix_str(COMPILING, refresh=True)

    def record(self, x: np.ndarray, chi2: float) -> None:
        """One function evaluation at ``x``."""
        self.nfev += 1
        if math.isfinite(chi2) and chi2 < self.best_chi2:
            self.best_chi2 = chi2
            self.best_x = np.array(x, dtype=np.float64, copy=True)

    def failed(self, exc: SolverError) -> None:
        """A solve failed (the point counts as an infinite loss)."""
        self.last_error = str(exc)

    def iteration(self, chi2: float, grad_norm: float) -> None:
        """One completed iteration; calls the user's callback (which may ask to stop)."""
        self.niter += 1
        self.history.append(chi2)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(chi2=f"{chi2:.6g}", grad=f"{grad_norm:.2e}", refresh=False)
        if self.callback is not None:
            info = {"iteration": self.niter, "chi2": chi2, "grad_norm": grad_norm,
                    "x": self.problem.get_vector()}
            if self.callback(info):
                self.stop_requested = True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def result(self, reason: str, status: str) -> RunResult:
        self.close()
        self.problem.set_vector(self.best_x)
        return RunResult(self.best_x, self.best_chi2, reason, status, self.niter, self.nfev,
                         self.ngrad, list(self.history), self.last_error)

    def unsolvable_start(self) -> RunResult:
        """The run could not start: the model cannot be solved at the initial point."""
        where = self.problem.describe_point()
        return self.result(f"the model cannot be solved at the initial point ({where})",
                           "failed")

    def interrupted(self) -> RunResult:
        return self.result("interrupted (KeyboardInterrupt)", "interrupted")


# ---------------------------------------------------------------------- LM
LM_STATUS = {
    -1: "improper input parameters",
    0: "max_iter reached (function evaluations)",
    1: "gradient norm below gtol",
    2: "relative change of chi2 below ftol",
    3: "relative step below xtol",
    4: "relative change of chi2 below ftol and step below xtol",
}


class _Settled(Exception):
    """The accepted LM iterates stopped changing (see :class:`_StopTest`)."""


class _StopTest:
    """Our stop test on accepted LM steps, besides scipy's on trial steps: the relative
    change of chi2 over an accepted step below ``ftol`` — floored at the solver's ``rtol``,
    since chi2 comes from solutions accurate to about ``rtol`` and smaller changes are
    the solver's noise (Dennis & Schnabel, *Numerical Methods for Unconstrained
    Optimization and Nonlinear Equations*, 1983, sec. 7.2: stopping tests relative to the
    noise in the function) — or the accepted step below ``xtol (xtol + |x|)`` (MINPACK's
    step test, Moré 1978). Without it a fit whose chi2 sits still at the noise level ran
    on until ``max_iter``. Each accepted step is one iteration; ``max_iter`` counts them
    (rejected trials are function evaluations only)."""

    def __init__(self, problem: FitProblem, ftol: float, xtol: float, max_iter: int) -> None:
        rtol = problem.solver.rtol
        noise = float(rtol.max()) if isinstance(rtol, torch.Tensor) else float(rtol)
        self.ftol, self.xtol, self.max_iter = max(ftol, noise), xtol, max_iter
        self.prev: tuple[np.ndarray, float] | None = None

    def accepted(self, x: np.ndarray, chi2: float, niter: int) -> None:
        """Raise :class:`_Settled` with the reason when the run should end at ``x``."""
        prev, self.prev = self.prev, (np.array(x, copy=True), chi2)
        if niter >= self.max_iter:
            raise _Settled(f"max_iter reached ({niter} accepted iterations)")
        if prev is None or not math.isfinite(chi2):
            return
        change = abs(prev[1] - chi2) / max(chi2, np.finfo(float).tiny)
        if change <= self.ftol:
            raise _Settled(f"chi2 stopped changing: relative change {change:.2g} over the "
                           f"last accepted step <= ftol {self.ftol:.2g}")
        step = float(np.linalg.norm(x - prev[0]))
        if step <= self.xtol * (self.xtol + float(np.linalg.norm(x))):
            raise _Settled(f"parameters stopped changing: step {step:.2g} <= xtol "
                           f"{self.xtol:.2g} x (xtol + |x|)")


def run_lm(problem: FitProblem, tracker: Tracker, *, max_iter: int, ftol: float,
           xtol: float, gtol: float, method: str = "trf") -> RunResult:
    """Levenberg-Marquardt on the weighted residuals (scipy.optimize.least_squares), with
    the stop test of :class:`_StopTest` on its accepted steps."""
    from scipy.optimize import least_squares

    m = problem.n_residuals
    cache: dict[str, Any] = {}
    stop_test = _StopTest(problem, ftol, xtol, max_iter)

    def fun(x: np.ndarray) -> np.ndarray:
        if cache.get("x") is not None and np.array_equal(cache["x"], x):
            r = cache["r"]
            return r if math.isfinite(cache["chi2"]) else np.full(m, np.inf)
        problem.set_vector(x)
        J = None
        try:
            ev = problem.residuals_and_jacobian()
            r, J = ev.r, ev.J
        except SolverError as exc:
            tracker.failed(exc)
            r = np.full(m, np.inf)
        chi2 = problem.chi2(r)
        cache.update(x=np.array(x, copy=True), J=J, r=r, chi2=chi2)
        tracker.record(x, chi2)
        return r if math.isfinite(chi2) else np.full(m, np.inf)

    def jac(x: np.ndarray) -> np.ndarray:
        if cache.get("x") is None or not np.array_equal(cache["x"], x) or cache["J"] is None:
            cache.clear()
            fun(x)
        tracker.ngrad += 1
        J, r = cache["J"], cache["r"]
        if J is None:
            raise SolverError(f"solve failed at the accepted point {x}", float("nan"))
        tracker.iteration(cache["chi2"], float(np.max(np.abs(J.T @ r))) if J.size else 0.0)
        if tracker.stop_requested:
            raise _Stop
        stop_test.accepted(x, cache["chi2"], tracker.niter - 1)
        return np.asarray(J)

    x0 = problem.get_vector()
    try:
        if not np.all(np.isfinite(fun(x0))):  # scipy would raise a bare ValueError
            return tracker.unsolvable_start()
        res = least_squares(fun, x0, jac=jac, method=method, x_scale="jac", ftol=ftol,
                            xtol=xtol, gtol=gtol, max_nfev=10 * max_iter + 10)
    except KeyboardInterrupt:
        return tracker.interrupted()
    except _Stop:
        return tracker.result("stopped by callback", "stopped")
    except _Settled as done:
        reason = str(done)
        return tracker.result(reason, "max_iter" if reason.startswith("max_iter") else
                              "converged")
    except SolverError as exc:
        return tracker.result(f"solver failed at an accepted point: {exc}", "failed")
    reason = LM_STATUS.get(res.status, str(res.message))
    status = "converged" if res.status > 0 else "max_iter" if res.status == 0 else "failed"
    return tracker.result(reason, status)


class _Stop(Exception):
    """A callback asked to stop."""


# ---------------------------------------------------------------------- gradients
def _evaluate(problem: FitProblem, tracker: Tracker) -> tuple[float, torch.Tensor | None]:
    """Mean loss and gradient at the current point; (inf, None) if the solve fails."""
    x = problem.get_vector()
    try:
        loss, g, r = problem.loss_and_grad()
    except SolverError as exc:
        tracker.failed(exc)
        loss, g, r = math.inf, None, None
    if not math.isfinite(loss) or g is None or r is None or not bool(torch.isfinite(g).all()):
        tracker.record(x, math.inf)
        return math.inf, None
    tracker.ngrad += 1
    tracker.record(x, problem.chi2(r))
    return loss, g


def _assign_grad(problem: FitProblem, g: torch.Tensor | None) -> None:
    offset = 0
    for p in problem.params:
        n = p.numel()
        if g is None:
            p.grad = torch.full_like(p, float("nan"))
        else:
            p.grad = g[offset:offset + n].reshape(p.shape).to(p)
        offset += n


def run_lbfgs(problem: FitProblem, tracker: Tracker, *, max_iter: int, ftol: float,
              gtol: float, lr: float = 1.0, history_size: int = 20,
              max_ls: int = 25) -> RunResult:
    """L-BFGS with strong-Wolfe line search; loss = chi2 / (2 n_data)."""
    opt = torch.optim.LBFGS(problem.params, lr=lr, max_iter=1, max_eval=1 + max_ls,
                            tolerance_grad=0.0, tolerance_change=0.0,
                            history_size=history_size, line_search_fn="strong_wolfe")
    seen: list[tuple[np.ndarray, float, float]] = []

    def closure():
        loss, g = _evaluate(problem, tracker)
        _assign_grad(problem, g)
        gnorm = float(g.abs().max()) if g is not None and g.numel() else 0.0
        seen.append((problem.get_vector(), loss, gnorm))
        del seen[:-40]
        return torch.tensor(loss, dtype=torch.float64)

    def current() -> tuple[float, float]:
        x = problem.get_vector()
        for xs, loss, gnorm in reversed(seen):
            if np.array_equal(xs, x):
                return loss, gnorm
        closure()
        return seen[-1][1], seen[-1][2]

    try:
        f_prev, gnorm = current()
        if not math.isfinite(f_prev):
            return tracker.unsolvable_start()
        if gnorm <= gtol:
            return tracker.result("gradient norm below gtol", "converged")
        for _ in range(max_iter):
            x_prev = problem.get_vector()
            opt.step(closure)
            f, gnorm = current()
            tracker.iteration(2.0 * f * problem.n_data, gnorm)
            if tracker.stop_requested:
                return tracker.result("stopped by callback", "stopped")
            if gnorm <= gtol:
                return tracker.result("gradient norm below gtol", "converged")
            if abs(f_prev - f) <= ftol * max(abs(f), abs(f_prev), 1e-300):
                return tracker.result("relative change of the loss below ftol", "converged")
            if np.array_equal(problem.get_vector(), x_prev):
                return tracker.result("line search made no progress", "stalled")
            f_prev = f
    except KeyboardInterrupt:
        return tracker.interrupted()
    return tracker.result("max_iter reached", "max_iter")


def run_adam(problem: FitProblem, tracker: Tracker, *, max_iter: int, gtol: float,
             lr: float = 0.01) -> RunResult:
    """Adam with a cosine schedule from ``lr`` down to ``lr / 100``."""
    opt = torch.optim.Adam(problem.params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(max_iter, 1),
                                                       eta_min=lr / 100)
    try:
        for i in range(max_iter):
            loss, g = _evaluate(problem, tracker)
            if g is None and i == 0:
                return tracker.unsolvable_start()
            if g is None:
                problem.set_vector(tracker.best_x)
                for group in opt.param_groups:
                    group["lr"] *= 0.5
                tracker.iteration(math.inf, math.nan)
                continue
            gnorm = float(g.abs().max()) if g.numel() else 0.0
            if gnorm <= gtol:
                return tracker.result("gradient norm below gtol", "converged")
            _assign_grad(problem, g)
            opt.step()
            sched.step()
            tracker.iteration(2.0 * loss * problem.n_data, gnorm)
            if tracker.stop_requested:
                return tracker.result("stopped by callback", "stopped")
        # the last step's point has not been evaluated yet
        _evaluate(problem, tracker)
    except KeyboardInterrupt:
        return tracker.interrupted()
    return tracker.result("max_iter reached", "max_iter")


__all__ = ["LM_STATUS", "STATUSES", "RunResult", "Tracker", "run_adam", "run_lbfgs", "run_lm"]
