"""Multistart fitting of a PEtab problem: :func:`fit_problem` -> :class:`physode.FitResult`.

Each start minimises ``nllh + prior`` over the estimated parameters on their PEtab scales
(as pyPESTO does: Fröhlich & Sorger, PLoS Comput Biol 18:e1010322, 2022, use log10 for
rate constants) within the PEtab bounds, with scipy's L-BFGS-B (Byrd, Lu, Nocedal & Zhu,
SIAM J. Sci. Comput. 16:1190, 1995) on the ACA gradient: the objective is a general
likelihood (estimated noise parameters, Laplace noise, priors), not a sum of squares, so a
bound-constrained quasi-Newton method fits every problem alike. Starts are drawn
uniformly within the bounds (``seed``), and run one after another or on any
``concurrent.futures.Executor`` (each worker reloads the problem from its cached code).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict
from typing import Any

import numpy as np
import scipy.optimize
import torch

from physode.errors import InvalidArgument, SolverError
from physode.estimate.parts import Convergence, Estimate, Trajectories
from physode.estimate.result import FitResult
from physode.estimate.settings import fit_settings
from physode.estimate.uncertainty import Statistics, Uncertainty
from physode.petab.objective import scale_to_lin
from physode.petab.simulate import SolverOptions
from physode.petab.system import fitted_outputs

_PENALTY = 1e10
"""The least value a failed evaluation gets during a fit (see :func:`run_start`)."""


def draw_starts(lower: np.ndarray, upper: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` points uniform within ``[lower, upper]`` (on the parameters' scales)."""
    if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
        raise InvalidArgument("random starts need finite bounds for every estimated parameter")
    rng = np.random.default_rng(seed)
    return lower + (upper - lower) * rng.random((n, len(lower)))


def run_start(problem: Any, x0: np.ndarray, max_iter: int, ftol: float,
              gtol: float) -> dict[str, Any]:
    """One L-BFGS-B run from ``x0``; a start whose solve fails is an infinite objective."""
    lower, upper = problem.bounds
    history: list[float] = []
    counts = {"nfev": 0}

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        counts["nfev"] += 1
        try:
            value, grad = problem.nllh_and_grad(x, prior=True)
        except SolverError:
            return failed(x)
        if not math.isfinite(value) or not np.all(np.isfinite(grad)):
            return failed(x)
        history.append(value)
        return value, grad

    def failed(x: np.ndarray) -> tuple[float, np.ndarray]:
        # A point where the solve fails or the likelihood is not finite (an observable's
        # log of a state that round-off made negative, say) gets a finite value far above
        # every value seen, with a zero gradient: L-BFGS-B's line search then backtracks
        # towards the last good point (Nocedal & Wright, Numerical Optimization, 2nd ed.,
        # sec. 3.5), where an infinite value would end the run at its first bad trial.
        worst = max((abs(v) for v in history), default=0.0)
        return max(_PENALTY, 10.0 * worst), np.zeros_like(x)

    t0 = time.perf_counter()
    res = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B",
                                  bounds=list(zip(lower, upper)),
                                  options={"maxiter": max_iter, "ftol": ftol, "gtol": gtol})
    status = "converged" if res.success else ("max_iter" if res.nit >= max_iter
                                              else "stalled")
    fun_value = float(res.fun)
    if not history or fun_value >= _PENALTY:  # no evaluation succeeded / ended on a failure
        status, fun_value = "failed", math.inf
    hess_inv = res.hess_inv.todense() if hasattr(res.hess_inv, "todense") else None
    return {"x0": np.asarray(x0), "x": np.asarray(res.x), "fun": fun_value,
            "status": status, "message": str(res.message), "nit": int(res.nit),
            "nfev": counts["nfev"], "history": history, "hess_inv": hess_inv,
            "time": time.perf_counter() - t0}


def _remote(loader: Callable[..., Any], yaml_path: str, options: dict[str, Any],
            x0: np.ndarray, max_iter: int, ftol: float, gtol: float) -> dict[str, Any]:
    """One start in a worker: ``loader`` (:func:`physode.petab.load`, passed by reference)
    reloads the problem from its cached code."""
    problem = loader(yaml_path, options=SolverOptions(**options))
    return run_start(problem, x0, max_iter, ftol, gtol)


def fit_problem(problem: Any, *, loader: Callable[..., Any] | None = None,
                multistart: int = 10, seed: int = 0, executor: Executor | None = None,
                max_iter: int = 500, ftol: float = 1e-10, gtol: float = 1e-6,
                include_nominal: bool = False,
                starts: np.ndarray | None = None) -> FitResult:
    """Fit ``problem`` (a :class:`~physode.petab.problem.PetabProblem`); see the module
    docstring. ``starts`` (``(n, P)`` on the PEtab scales) replaces the random draw."""
    lower, upper = problem.bounds
    if starts is None:
        n = max(int(multistart), 1)
        starts = draw_starts(lower, upper, n, seed)
        if include_nominal:
            starts = np.vstack([problem.theta().numpy()[None], starts[:-1]])
    starts = np.atleast_2d(np.asarray(starts, dtype=np.float64))
    t0 = time.perf_counter()
    if executor is None or loader is None:
        runs = [run_start(problem, x0, max_iter, ftol, gtol) for x0 in starts]
    else:
        opts = asdict(problem.options)
        futures = [executor.submit(_remote, loader, str(problem.path), opts, x0, max_iter,
                                   ftol, gtol) for x0 in starts]
        runs = [f.result() for f in futures]
    return build_result(problem, runs, time.perf_counter() - t0, seed)


def build_result(problem: Any, runs: list[dict[str, Any]], wall: float,
                 seed: int) -> FitResult:
    """A :class:`FitResult` from the runs (the best one is the estimate)."""
    best = min(runs, key=lambda r: r["fun"])
    ids = problem.free_ids
    scales = problem.objective.free_scales
    theta = torch.tensor(best["x"], dtype=torch.float64)
    lin = scale_to_lin(theta, scales).numpy()
    lin0 = scale_to_lin(torch.tensor(best["x0"]), scales).numpy()
    lo, hi = problem.table.lower[problem.table.free], problem.table.upper[problem.table.free]
    system = problem.system
    system.set_params(**{k: float(v) for k, v in zip(ids, lin)
                         if k in system.parameter_specs()})
    # covariance on the linear scale from L-BFGS-B's inverse Hessian (scaled): D H^-1 D
    d = np.array([1.0 if s == "lin" else v if s == "log" else v * math.log(10)
                  for v, s in zip(lin, scales)])
    cov = (d[:, None] * best["hess_inv"] * d[None, :] if best["hess_inv"] is not None
           else np.full((len(ids), len(ids)), np.nan))
    stderr = np.sqrt(np.clip(np.diag(cov), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(stderr, stderr)
    estimate = Estimate(labels=list(ids), values=lin, initial_values=lin0,
                        bounds=list(zip(lo.tolist(), hi.tolist())), units=[None] * len(ids),
                        params={k: np.asarray(v) for k, v in zip(ids, lin)},
                        fixed={pid: np.asarray(problem.table.nominal[i])
                               for i, pid in enumerate(problem.table.ids)
                               if not problem.table.estimated[i]},
                        shapes={k: () for k in ids})
    n_data = len(problem.measurements)
    nllh = best["fun"]
    statistics = Statistics(chi2=2 * nllh, redchi=2 * nllh / max(n_data - len(ids), 1),
                            aic=2 * nllh + 2 * len(ids),
                            bic=2 * nllh + math.log(max(n_data, 1)) * len(ids),
                            n_data=n_data, n_params=len(ids), n_learnable=0,
                            sigma_estimated=False, noise_sigma=float("nan"))
    convergence = Convergence(
        status=best["status"], stop_reason=best["message"], niter=best["nit"],
        nfev=sum(r["nfev"] for r in runs), ngrad=sum(r["nfev"] for r in runs),
        wall_time=wall, history=best["history"],
        starts=[{"x0": r["x0"].tolist(), "x": r["x"].tolist(), "nllh": r["fun"],
                 "status": r["status"], "nit": r["nit"], "nfev": r["nfev"],
                 "time": r["time"]} for r in runs])
    opts = problem.options
    settings = fit_settings(gradient=opts.gradient, method=opts.method, rtol=opts.rtol,
                            atol=opts.atol, optimizer="lbfgs", multistart=len(runs),
                            seed=seed, progress=False, compile=False)
    fitted, outputs = fitted_outputs(problem, theta)
    trajectories = Trajectories(fitted=fitted, outputs=outputs)
    uncertainty = Uncertainty(covariance=cov, stderr=stderr, correlation=corr)
    return FitResult(system, problem.observations, estimate, uncertainty, statistics,
                     convergence, settings, trajectories)


__all__ = ["build_result", "draw_starts", "fit_problem", "run_start"]
