"""Multistart fitting of a PEtab problem: :func:`fit_problem` -> :class:`physode.FitResult`.

Each start minimises ``nllh + prior`` over the estimated parameters on their PEtab scales
(as pyPESTO does: Fröhlich & Sorger, PLoS Comput Biol 18:e1010322, 2022, use log10 for
rate constants) within the PEtab bounds, with scipy's L-BFGS-B (Byrd, Lu, Nocedal & Zhu,
SIAM J. Sci. Comput. 16:1190, 1995) on the ACA gradient: the objective is a general
likelihood (estimated noise parameters, Laplace noise, priors), not a sum of squares, so a
bound-constrained quasi-Newton method fits every problem alike. Starts are drawn
uniformly within the bounds (``seed``), and run one after another or on any
``concurrent.futures.Executor`` (each worker reloads the problem from its cached code).

With ``optimizer="lm"`` — the choice of ``"auto"`` whenever the objective is a sum of squares
(no priors; :func:`physode.petab.batch_objective.supports`) — all starts run together
as one batched Levenberg–Marquardt fit on forward sensitivities
(:mod:`physode.petab.batch_fit`), which is much faster; on an executor, in one batched
chunk of starts per worker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, replace
from typing import Any, TypeVar

import numpy as np
import scipy.optimize
import torch

from physode.errors import InvalidArgument, SolverError
from physode.estimate.executor import MapResult, executor_workers, map_tasks
from physode.estimate.parts import Convergence, Estimate, Trajectories
from physode.estimate.result import FitResult
from physode.estimate.settings import fit_settings
from physode.estimate.uncertainty import Statistics, Uncertainty
from physode.petab.batch_fit import fit_batched
from physode.petab.batch_objective import supports
from physode.petab.objective import scale_to_lin
from physode.petab.simulate import SolverOptions, single_thread
from physode.petab.system import fitted_outputs

T = TypeVar("T")

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


_LOADED: dict[tuple[str, str], Any] = {}
"""Problems a worker process reloaded, by (yaml path, options): a worker that runs several
tasks of one fit loads the problem once."""


def _loaded(loader: Callable[..., Any], yaml_path: str, options: dict[str, Any]) -> Any:
    key = (yaml_path, repr(sorted(options.items())))
    problem = _LOADED.get(key)
    if problem is None:
        problem = loader(yaml_path, options=SolverOptions(**options))
        _LOADED.clear()  # keep one problem per worker
        _LOADED[key] = problem
    return problem


def _remote(task: tuple[Any, ...]) -> dict[str, Any]:
    """One L-BFGS-B start in a worker: ``loader`` (:func:`physode.petab.load`, passed by
    reference) reloads the problem from its cached code."""
    loader, yaml_path, options, x0, max_iter, ftol, gtol = task
    problem = _loaded(loader, yaml_path, options)
    with single_thread():
        return run_start(problem, x0, max_iter, ftol, gtol)


def _remote_batched(task: tuple[Any, ...]) -> list[dict[str, Any]]:
    """A chunk of starts as one batched least-squares fit in a worker."""
    problem, loader, yaml_path, options, chunk, kwargs = task
    if problem is None:  # in a worker: reload (once per process)
        problem = _loaded(loader, yaml_path, options)
    with single_thread():
        return fit_batched(problem, chunk, **kwargs)


def _chunks(starts: np.ndarray, executor: Any, per_task: int | None) -> list[np.ndarray]:
    """The starts split into tasks: ``per_task`` starts each, or as many tasks as the
    executor has workers (4 where it does not say)."""
    n = len(starts)
    if per_task is None:
        workers = executor_workers(executor) or 4
        per_task = math.ceil(n / workers)
    if isinstance(per_task, bool) or not isinstance(per_task, int) or per_task < 1:
        raise InvalidArgument(f"starts_per_task must be an integer >= 1, got {per_task!r}")
    return [starts[i:i + per_task] for i in range(0, n, per_task)]


def choose_optimizer(problem: Any, optimizer: str,
                     executor: Executor | str | None) -> tuple[str, str]:
    """``("lm" | "lbfgs", why)`` for ``optimizer`` "auto", "lm" or "lbfgs"."""
    if optimizer not in ("auto", "lm", "lbfgs"):
        raise InvalidArgument(f"optimizer must be 'auto', 'lm' or 'lbfgs', got {optimizer!r}")
    reason = supports(problem.objective)
    if reason is None and any(problem.table.priors[i] is not None for i in problem.table.free):
        reason = "the problem has priors"
    if optimizer == "lm" and reason is not None:
        raise InvalidArgument(f"{problem.name}: optimizer 'lm' (batched least squares) is not "
                              f"available: {reason}; use 'lbfgs'")
    if optimizer == "lbfgs":
        return "lbfgs", "chosen by the caller"
    if optimizer == "lm":
        return "lm", "chosen by the caller"
    if reason is not None:
        return "lbfgs", f"batched least squares unavailable: {reason}"
    if executor is not None:
        return "lm", ("least squares on forward sensitivities, the starts batched in one "
                      "chunk per worker")
    return "lm", "least squares on forward sensitivities, all starts batched"


def fit_problem(problem: Any, *, loader: Callable[..., Any] | None = None,
                multistart: int = 10, seed: int = 0,
                executor: Executor | str | None = None,
                max_iter: int = 500, ftol: float | None = None, gtol: float = 1e-6,
                include_nominal: bool = False, optimizer: str = "auto",
                compile: bool | None = None,
                starts: np.ndarray | None = None,
                starts_per_task: int | None = None) -> FitResult:
    """Fit ``problem`` (a :class:`~physode.petab.problem.PetabProblem`); see the module
    docstring. ``starts`` (``(n, P)`` on the PEtab scales) replaces the random draw.
    ``compile`` (batched fits): compile the model's sensitivity kernels (default
    ``problem.options.compile``): each iteration then takes about half the time, after a
    compilation of about 30 s the first time (a few seconds once torch's cache is warm).
    On Boehm_JProteomeRes2014 from 100 starts, eager took 44 s, compiled 28 s plus the
    compilation. ``ftol``: relative decrease of the objective that ends a start
    (default 1e-8 for batched least squares, fides's default ``frtol``; 1e-10 for
    L-BFGS-B).

    ``executor`` (None, ``"processes"`` or any :class:`concurrent.futures.Executor`, e.g. a
    Dask client's): batched least squares runs the starts in chunks of
    ``starts_per_task`` (default: one chunk per worker), each chunk one batched fit in a
    worker, which reloads the problem from its cached code; L-BFGS-B runs one start per
    task. A worker that dies costs only its task, which is run again (see
    :func:`physode.estimate.executor.map_tasks`). Every start's result depends only on
    the chunk it ran in: the same ``starts_per_task`` gives the same results serially
    (``executor=None``) and on any number of workers."""
    chosen, why = choose_optimizer(problem, optimizer, executor)
    lower, upper = problem.bounds
    if starts is None:
        n = max(int(multistart), 1)
        starts = draw_starts(lower, upper, n, seed)
        if include_nominal:
            starts = np.vstack([problem.theta().numpy()[None], starts[:-1]])
    starts = np.atleast_2d(np.asarray(starts, dtype=np.float64))
    t0 = time.perf_counter()
    opts = asdict(problem.options)
    path = str(problem.path) if loader is not None else ""
    if chosen == "lm":
        use_compile = problem.options.compile if compile is None else compile
        kwargs: dict[str, Any] = dict(max_iter=min(max_iter, 200),
                                      ftol=1e-8 if ftol is None else ftol, gtol=gtol,
                                      compile=use_compile)
        if executor is None and starts_per_task is None:
            runs = fit_batched(problem, starts, **kwargs)
        else:
            chunks = _chunks(starts, executor, starts_per_task)
            here = executor is None or loader is None
            tasks = [(problem if here else None, loader, path, opts, c, kwargs)
                     for c in chunks]
            done = map_tasks(_remote_batched, tasks, None if here else executor,
                             desc="chunks of starts")
            runs = [r for chunk in _finished(done) for r in chunk]
            for r in runs:  # a chunk's starts shared its wall time
                r["time"] *= len(chunks)
        return build_result(problem, runs, time.perf_counter() - t0, seed, chosen, why)
    ftol = 1e-10 if ftol is None else ftol
    if executor is None or loader is None:
        runs = [run_start(problem, x0, max_iter, ftol, gtol) for x0 in starts]
    else:
        one = [(loader, path, opts, x0, max_iter, ftol, gtol) for x0 in starts]
        runs = _finished(map_tasks(_remote, one, executor, desc="starts"))
    return build_result(problem, runs, time.perf_counter() - t0, seed, chosen, why)


def _finished(done: MapResult[T]) -> list[T]:
    """The results of a map that must have finished every task (Ctrl-C raises)."""
    if done.interrupted or any(r is None for r in done.results):
        raise KeyboardInterrupt
    return [r for r in done.results if r is not None]


def build_result(problem: Any, runs: list[dict[str, Any]], wall: float,
                 seed: int, optimizer: str = "lbfgs", why: str = "") -> FitResult:
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
        starts=[{"start": i, "x0": r["x0"].tolist(), "x": r["x"].tolist(),
                 "nllh": r["fun"], "chi2": 2 * r["fun"], "status": r["status"],
                 "nit": r["nit"], "niter": r["nit"], "nfev": r["nfev"],
                 "stop_reason": r["message"], "time": r["time"],
                 "initial": dict(zip(ids, scale_to_lin(torch.as_tensor(r["x0"]),
                                                       scales).tolist()))}
                for i, r in enumerate(runs)])
    opts = problem.options
    settings = fit_settings(gradient=opts.gradient, method=opts.method, rtol=opts.rtol,
                            atol=opts.atol, optimizer=optimizer, multistart=len(runs),
                            seed=seed, progress=False, compile=False)
    settings = replace(settings, optimizer_reason=why)
    fitted, outputs = fitted_outputs(problem, theta)
    trajectories = Trajectories(fitted=fitted, outputs=outputs)
    uncertainty = Uncertainty(covariance=cov, stderr=stderr, correlation=corr)
    return FitResult(system, problem.observations, estimate, uncertainty, statistics,
                     convergence, settings, trajectories)


__all__ = ["build_result", "choose_optimizer", "draw_starts", "fit_problem", "run_start"]
