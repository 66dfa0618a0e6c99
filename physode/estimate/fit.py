"""``physode.fit(system, observations)``: estimate a system's unknowns from trajectories.

A short orchestration of the estimation layer: check the settings once
(:mod:`physode.estimate.settings`), build the least-squares problem
(:mod:`physode.estimate.problem`, the only road to the solver), run one of three
optimisers from one or more starts (:mod:`physode.estimate.optimizers`,
:mod:`physode.estimate.starts`), then the Gauss-Newton uncertainty and the statistics
(:mod:`physode.estimate.uncertainty`) into a :class:`FitResult` with an lmfit-style report,
xarray/netCDF export and plots.

``compile="auto"``: compiling the solver step (``torch.compile``, :mod:`physode.ode.compile`)
costs ~5-20 s once and then makes each solve of a small system ~5-50x faster (three-body,
measured: plain solve 0.28 s -> 0.06 s; LM's sensitivity solve 7 s -> 0.13 s). The rule:
time one eager solve at the start (t0), estimate the eager cost of the whole fit as
``t0 x factor x expected solves x starts`` (factor: 4 for a gradient, 1 + 8P for LM's
P-direction sensitivity solve; expected solves: LM 15, L-BFGS 1.5 per iteration up to 150,
Adam max_iter), and compile when that exceeds :data:`COMPILE_BREAK_EVEN_S` and the
(augmented) state is small (<= :data:`COMPILE_MAX_STATE`), where per-operation overhead
dominates. Pendulum or kinetics fits take well under a second eagerly and stay eager;
the three-body fit compiles. Stiff methods compile only above
:data:`COMPILE_BREAK_EVEN_STIFF_S`, as their compiled loops take minutes to build, except
LM fits on the staggered sensitivities of mass-action networks, whose one loop builds in
seconds (:data:`COMPILE_BREAK_EVEN_STAGGERED_S`).
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

import numpy as np

from physode.data.hdf5 import load_observations
from physode.data.observations import Observations
from physode.errors import InvalidArgument, SolverError
from physode.estimate.choice import choose_optimizer
from physode.estimate.conditions import prepare_experiments
from physode.estimate.distributed import is_main_rank, make_problem
from physode.estimate.likelihood import describe_objective
from physode.estimate.multistart import run_starts
from physode.estimate.optimizers import Callback, RunResult
from physode.estimate.parts import Convergence, Estimate, Trajectories
from physode.estimate.problem import FitProblem, prepare_initial_states
from physode.estimate.result import FitResult
from physode.estimate.settings import (
    DEFAULT_MAX_ITER,
    FINE_POINTS,
    OPTIMIZERS,
    FitSettings,
    fit_settings,
)
from physode.estimate.staggered import applies
from physode.estimate.store import ResultStore
from physode.estimate.uncertainty import Uncertainty, fit_statistics, gauss_newton
from physode.model.parameter import labels_for
from physode.model.system import System

#: Estimated eager seconds above which compiling pays for its one-off cost.
COMPILE_BREAK_EVEN_S = 45.0
#: The same for stiff (Rosenbrock) methods, whose compiled loops carry a Jacobian, a
#: factorisation and its vector-Jacobian product and took 1-4 minutes to compile on a
#: 2-core machine (benchmarks/stiff_kinetics.py).
COMPILE_BREAK_EVEN_STIFF_S = 600.0
#: The same for LM fits whose sensitivities all come from the staggered loop
#: (:mod:`physode.estimate.staggered`): it compiles alone, in 10-20 s (the cascade and
#: Robertson of benchmarks/stiff_kinetics.py), and an evaluation costs about
#: :data:`STAGGERED_COST` plain solves eagerly (2.4-2.8 measured there).
COMPILE_BREAK_EVEN_STAGGERED_S = 20.0
STAGGERED_COST = 3.0
#: Largest (augmented) state for which compilation is considered.
COMPILE_MAX_STATE = 4096


def fit(
    system: System,
    observations: Observations | str | os.PathLike[str],
    *,
    gradient: str = "aca",
    method: str = "dopri5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    optimizer: str = "auto",
    max_iter: int | None = None,
    multistart: int = 0,
    progress: bool = True,
    compile: bool | str = "auto",
    seed: int = 0,
    options: dict[str, Any] | None = None,
    lr: float | None = None,
    ftol: float = 1e-12,
    xtol: float = 1e-12,
    gtol: float = 1e-12,
    lm_method: str = "trf",
    callback: Callback | None = None,
    fine_points: int = FINE_POINTS,
    executor: Executor | str | None = None,
    store: str | os.PathLike[str] | ResultStore | None = None,
    resume: bool = False,
) -> FitResult:
    """Fit the free parameters (and unknown initial states, and learnable weights) of
    ``system`` to ``observations``.

    Args:
        system: a :class:`~physode.System`; it is updated in place to the estimate. When
            initial states are unknown and there are several experiments, its reference
            ``y0`` becomes one row per experiment (one fitted initial state each).
        observations: :class:`~physode.Observations` (validated against ``system`` here) or
            the path of an HDF5 file (loaded and validated).
        gradient: "aca" (default), "direct" or "adjoint": how L-BFGS and Adam get the
            gradient. LM uses forward sensitivities (:mod:`physode.estimate.sensitivity`).
        method, rtol, atol, options: the ODE solver (see :func:`physode.solve`).
        optimizer: "auto" (default: "lm" for least squares with up to
            :data:`~physode.estimate.choice.LM_MAX_UNKNOWNS` unknowns and no learnable
            weights, else "lbfgs"; the report says which ran and why), "lbfgs" (L-BFGS,
            strong-Wolfe line search), "adam" (cosine schedule) or "lm"
            (Levenberg-Marquardt).
        max_iter: iterations (LM: residual evaluations); default 200 / 500 / 100.
        multistart: number of extra starts drawn within the bounds (log-uniform for
            positive parameters; +-1 decade around the initial value when unbounded),
            seeded by ``seed`` (an integer >= 0); the best is kept and every start is
            reported.
        progress: show a tqdm progress bar (iteration, chi-square, gradient norm).
        compile: True, False or "auto" (see the module docstring for the rule).
        lr: learning rate (Adam, default 0.01) or L-BFGS initial step (default 1); > 0.
        ftol, xtol, gtol: stop when the relative change of the loss, the relative step
            (LM) or the largest gradient component falls below them.
        lm_method: "trf" (default; copes with failed solves) or "lm" (MINPACK).
        callback: called after each iteration with ``{"iteration", "chi2",
            "grad_norm", "x"}``; returning True stops the fit.
        fine_points: points of the fine time grid of the fitted trajectories.
        executor: where the starts run: None (here, one after another), "processes" (a
            local process pool) or any ``concurrent.futures.Executor`` (a Dask client's
            ``get_executor()``, ...); same runs and result for a given seed
            (:mod:`physode.estimate.multistart`).
        store, resume: an HDF5 results file each finished start is written to as it
            completes; ``resume=True`` runs only the starts it does not hold yet
            (:mod:`physode.estimate.store`).

    Returns:
        :class:`FitResult`. ``success`` is True only when a convergence criterion was met
        (``status == "converged"``); ``status`` and ``stop_reason`` say why it stopped
        otherwise, ``failure`` why the model could not be solved. Ctrl-C during the fit
        returns the best result so far with ``interrupted=True``.

    Raises:
        InvalidArgument: a bad argument (the message names it).
        InvalidObservations: observations that do not fit the schema or the system.
    """
    start_time = time.perf_counter()
    given: dict[str, Any] = dict(
        gradient=gradient, method=method, rtol=rtol, atol=atol, optimizer=optimizer,
        max_iter=max_iter, multistart=multistart, progress=progress, compile=compile,
        seed=seed, options=options, lr=lr, ftol=ftol, xtol=xtol, gtol=gtol,
        lm_method=lm_method, callback=callback, fine_points=fine_points)
    settings = fit_settings(**given)
    if not isinstance(system, System):
        raise InvalidArgument(f"fit needs a physode.System, got {type(system).__name__}")
    if isinstance(observations, Observations):
        observations.validate(system)
    else:
        observations = load_observations(observations, system=system)
    prepare_initial_states(system, observations)
    prepare_experiments(system, observations)
    problem = make_problem(system, observations, settings.solver)  # data-parallel in torchrun
    if not is_main_rank():  # one progress bar: rank 0's
        given["progress"] = False
        settings = replace(settings, progress=False)
    if problem.n_params == 0:
        raise InvalidArgument(f"{type(system).__name__} has nothing to fit: every parameter "
                              "is fixed and the initial state is known")
    if settings.optimizer == "auto":
        chosen, why = choose_optimizer(problem.n_physical, problem.n_params - problem.n_physical,
                                       problem.n_data, (settings.ftol, settings.xtol,
                                                        settings.gtol))
        settings = replace(fit_settings(**{**given, "optimizer": chosen}), optimizer_reason=why)
    if settings.optimizer == "lm" and problem.n_data < problem.n_params:
        raise InvalidArgument(f"LM needs at least as many data ({problem.n_data}) as fitted "
                              f"values ({problem.n_params})")
    initial_values = problem.physical_values()
    settings = replace(settings, compile=_use_compile(problem, settings))
    runs, abandoned = run_starts(problem, settings, executor=executor, store=store,
                                 resume=resume)
    try:
        return _finish(problem, settings, runs, initial_values, start_time,
                       interrupted=abandoned)
    except KeyboardInterrupt:  # a second Ctrl-C while computing the uncertainty
        return _finish(problem, settings, runs, initial_values, start_time,
                       interrupted=True)


def _finish(problem: FitProblem, settings: FitSettings, runs: list[tuple[np.ndarray, RunResult]],
            initial_values: np.ndarray, start_time: float,
            interrupted: bool = False) -> FitResult:
    """The best run's estimate with its uncertainty, statistics and trajectories."""
    best = min(range(len(runs)), key=lambda i: (runs[i][1].chi2, i))
    run = runs[best][1]
    starts = _start_records(problem, runs)
    problem.set_vector(run.x)
    problem.compile = settings.compile is True and settings.optimizer == "lm"
    unc, chi2, failure = _uncertainty(problem, run, not interrupted, initial_values)
    problem.compile = False
    stats = fit_statistics(chi2, problem.n_data, problem.n_physical,
                           problem.n_params - problem.n_physical, problem.sigma_estimated)
    try:
        fitted = [s.detach().cpu().numpy() for s in problem.predict()]
        fine_t, fine_states = problem.trajectories(settings.fine_points)
        traj = Trajectories(fitted, fine_t, fine_states, problem.predict_outputs())
    except SolverError as exc:
        traj, failure = Trajectories(), failure or str(exc)
    status, reason = run.status, run.stop_reason
    if interrupted or any(r.interrupted for _, r in runs):
        status = "interrupted"
    elif failure is not None:
        status = "failed"
    elif status == "converged" and unc.insensitive and len(unc.insensitive) == len(
            problem.system.free_labels()):
        status = "flat"
        reason += ("; but the model does not respond to any fitted parameter here (a "
                   "plateau, not a minimum): start elsewhere")
    if failure is None and run.status == "failed":
        failure = run.error
    convergence = Convergence(
        status=status, stop_reason=reason, niter=sum(r.niter for _, r in runs),
        nfev=sum(r.nfev for _, r in runs), ngrad=sum(r.ngrad for _, r in runs),
        wall_time=time.perf_counter() - start_time, history=run.history, starts=starts,
        failure=failure)
    return FitResult(system=problem.system, observations=problem.obs,
                     estimate=_estimate(problem, initial_values), uncertainty=unc,
                     statistics=stats, convergence=convergence, settings=settings,
                     trajectories=traj)


def _uncertainty(problem: FitProblem, run: RunResult, compute: bool,
                 scales: np.ndarray | None = None) -> tuple[Uncertainty, float, str | None]:
    """Gauss-Newton uncertainty at the current point, chi2 there, and the solver failure
    (message) when the model cannot be solved there."""
    P = problem.n_physical
    J: np.ndarray | None = np.zeros((problem.n_residuals, 0)) if P == 0 else None
    r: np.ndarray | None = None
    failure = None
    if P and compute and math.isfinite(run.chi2):
        try:
            ev = problem.residuals_and_jacobian(physical_only=True, information=True)
            J, r = ev.J, ev.r
        except SolverError as exc:
            failure = str(exc)
    if r is None:
        problem.compile = False
        try:
            r = problem.residuals().r
        except SolverError as exc:
            failure = str(exc)
            r = np.full(problem.n_residuals, np.nan)
    chi2 = problem.data_chi2(r) if np.all(np.isfinite(r)) else run.chi2
    if J is None:
        J = np.full((problem.n_residuals, P), np.nan)
    unc = gauss_newton(J, problem.system.free_labels(), problem.physical_derivatives(), chi2,
                       problem.n_data, problem.n_params, problem.sigma_estimated,
                       values=problem.physical_values(), bounds=_free_bounds(problem)[0],
                       scales=scales)
    return unc, chi2, failure


def _free_bounds(problem: FitProblem) -> tuple[list[tuple[float, float]], list[str | None]]:
    """Physical bounds and units of each fitted physical scalar, in label order."""
    system = problem.system
    specs = system.parameter_specs()
    bounds: list[tuple[float, float]] = []
    units: list[str | None] = []
    for name, p in zip(system.free_names(), problem.physical):
        if name.startswith("y0."):
            b, u = (-math.inf, math.inf), system.layout.by_name[name[3:]].units
        else:
            b, u = (specs[name].lower, specs[name].upper), specs[name].units
        bounds += [b] * p.numel()
        units += [u] * p.numel()
    return bounds, units


def _estimate(problem: FitProblem, initial_values: np.ndarray) -> Estimate:
    system = problem.system
    specs = system.parameter_specs()
    bounds, units = _free_bounds(problem)
    shapes = {name: tuple(p.shape) for name, p in zip(system.free_names(), problem.physical)}
    params = {k: v.detach().cpu().numpy().copy() for k, v in system.params.items()}
    truth: dict[str, float] = {}
    for name, value in problem.obs.parameters.items():  # information, never a constraint
        arr = np.asarray(value, dtype=np.float64)
        if name in specs and not specs[name].fixed and arr.shape == specs[name].shape:
            truth.update(zip(labels_for(name, arr.shape), arr.reshape(-1).tolist()))
    return Estimate(labels=system.free_labels(), values=problem.physical_values(),
                    initial_values=initial_values, bounds=bounds, units=units, params=params,
                    fixed={k: v for k, v in params.items() if specs[k].fixed}, truth=truth,
                    shapes=shapes, objective=describe_objective(
                        system, problem.series, problem.objective_value,
                        problem.sigma_estimated))


def _start_records(problem: FitProblem,
                   runs: list[tuple[np.ndarray, RunResult]]) -> list[dict[str, Any]]:
    labels = problem.system.free_labels()
    records = []
    for i, (x_start, rr) in enumerate(runs):
        problem.set_vector(x_start)
        init = dict(zip(labels, problem.physical_values().tolist()))
        records.append({"start": i, "initial": init, "chi2": rr.chi2, "status": rr.status,
                        "stop_reason": rr.stop_reason, "niter": rr.niter, "nfev": rr.nfev,
                        "success": rr.success})
    return records


def _use_compile(problem: FitProblem, settings: FitSettings) -> bool:
    """The ``compile="auto"`` rule (module docstring); True/False are taken as given."""
    if settings.compile != "auto":
        return settings.compile is True
    t_eager = math.inf  # the second of two eager solves (the first pays one-off costs)
    for _ in range(2):
        t_probe = time.perf_counter()
        try:
            problem.residuals()
        except SolverError:
            break
        t_eager = min(t_eager, time.perf_counter() - t_probe)
    t_eager = 0.0 if math.isinf(t_eager) else t_eager
    P = problem.n_params
    size = problem.system.state_size
    factor, expected = 4.0, float(settings.max_iter)
    if settings.optimizer == "lm":
        factor, expected, size = 1.0 + 8.0 * P, min(settings.max_iter, 15), size * (1 + P)
    elif settings.optimizer == "lbfgs":
        expected = 1.5 * min(settings.max_iter, 100)
    break_even = COMPILE_BREAK_EVEN_STIFF_S if settings.stiff else COMPILE_BREAK_EVEN_S
    groups = getattr(problem, "groups", None)  # a distributed problem has none of its own
    if (settings.optimizer == "lm" and getattr(problem, "staggered", None) is not None
            and groups and all(applies(g, problem.system) for g in groups)):
        factor, size = STAGGERED_COST, problem.system.state_size
        break_even = COMPILE_BREAK_EVEN_STAGGERED_S
    estimate = t_eager * factor * expected * (settings.multistart + 1)
    return size <= COMPILE_MAX_STATE and estimate > break_even


__all__ = ["COMPILE_BREAK_EVEN_S", "COMPILE_BREAK_EVEN_STAGGERED_S",
           "COMPILE_BREAK_EVEN_STIFF_S", "COMPILE_MAX_STATE",
           "DEFAULT_MAX_ITER", "OPTIMIZERS", "fit"]
