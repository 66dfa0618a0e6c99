"""``physode.fit(system, observations)``: estimate a system's unknowns from trajectories.

The whole workflow in one call: weighted least squares over every experiment
(:mod:`physode.estimate.problem`), one of three optimisers (:mod:`physode.estimate.optimizers`:
L-BFGS with strong-Wolfe line search, Adam, Levenberg-Marquardt), optional multistart,
Gauss-Newton uncertainty (:mod:`physode.estimate.uncertainty`), and a :class:`FitResult` with an
lmfit-style report, xarray/netCDF export and plots.

``compile="auto"``: compiling the solver step (``torch.compile``, :mod:`physode.ode.compile`)
costs ~5-20 s once and then makes each solve of a small system ~5-50x faster (three-body,
measured: plain solve 0.28 s -> 0.06 s; LM's sensitivity solve 7 s -> 0.13 s). The rule:
time one eager solve at the start (t0), estimate the eager cost of the whole fit as
``t0 x factor x expected solves x starts`` (factor: 4 for a gradient, 1 + 8P for LM's
P-direction sensitivity solve; expected solves: LM 15, L-BFGS 1.5 per iteration up to 150,
Adam max_iter), and compile when that exceeds :data:`COMPILE_BREAK_EVEN_S` and the
(augmented) state is small (<= :data:`COMPILE_MAX_STATE`), where per-operation overhead
dominates. Pendulum or kinetics fits take well under a second eagerly and stay eager;
the three-body fit compiles.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from physode.data.observations import Observations, load_observations
from physode.errors import InvalidArgument, SolverError
from physode.estimate.optimizers import Callback, RunResult, Tracker, run_adam, run_lbfgs, run_lm
from physode.estimate.problem import FitProblem
from physode.estimate.report import information_criteria
from physode.estimate.result import FitResult
from physode.estimate.uncertainty import gauss_newton
from physode.model.system import System
from physode.ode.gradients import GRADIENTS
from physode.ode.methods import METHODS

OPTIMIZERS = ("lbfgs", "adam", "lm")
DEFAULT_MAX_ITER = {"lbfgs": 200, "adam": 500, "lm": 100}
#: Estimated eager seconds above which compiling pays for its one-off cost.
COMPILE_BREAK_EVEN_S = 45.0
#: Largest (augmented) state for which compilation is considered.
COMPILE_MAX_STATE = 4096
FINE_POINTS = 500


def fit(
    system: System,
    observations: Observations | str | os.PathLike[str],
    *,
    gradient: str = "aca",
    method: str = "dopri5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    optimizer: str = "lbfgs",
    max_iter: int | None = None,
    multistart: int = 0,
    progress: bool = True,
    compile: bool | str = "auto",
    seed: int = 0,
    options: dict | None = None,
    lr: float | None = None,
    ftol: float = 1e-12,
    xtol: float = 1e-12,
    gtol: float = 1e-12,
    lm_method: str = "trf",
    callback: Callback | None = None,
    fine_points: int = FINE_POINTS,
) -> FitResult:
    """Fit the free parameters (and unknown initial states, and learnable weights) of
    ``system`` to ``observations``.

    Args:
        system: a :class:`~physode.System`; it is updated in place to the estimate.
        observations: :class:`~physode.Observations` or the path of an HDF5 file.
        gradient: "aca" (default), "direct" or "adjoint": how L-BFGS and Adam get the
            gradient. LM uses forward sensitivities (:mod:`physode.estimate.sensitivity`).
        method, rtol, atol, options: the ODE solver (see :func:`physode.solve`).
        optimizer: "lbfgs" (default; L-BFGS, strong-Wolfe line search), "adam" (cosine
            schedule) or "lm" (Levenberg-Marquardt; best for few parameters).
        max_iter: iterations (LM: residual evaluations); default 200 / 500 / 100.
        multistart: number of extra starts drawn within the bounds (log-uniform for
            positive parameters; +-1 decade around the initial value when unbounded),
            seeded by ``seed``; the best is kept and every start is reported.
        progress: show a tqdm progress bar (iteration, chi-square, gradient norm).
        compile: True, False or "auto" (see the module docstring for the rule).
        lr: learning rate (Adam, default 0.01) or L-BFGS initial step (default 1).
        ftol, xtol, gtol: stop when the relative change of the loss, the relative step
            (LM) or the largest gradient component falls below them.
        lm_method: "trf" (default; copes with failed solves) or "lm" (MINPACK).
        callback: called after each iteration with ``{"iteration", "chi2",
            "grad_norm", "x"}``; returning True stops the fit.
        fine_points: points of the fine time grid of the fitted trajectories.

    Returns:
        :class:`FitResult`. Ctrl-C during the fit returns the best result so far with
        ``interrupted=True``.
    """
    start_time = time.perf_counter()
    if optimizer not in OPTIMIZERS:
        raise InvalidArgument(f"unknown optimizer {optimizer!r}; choose one of "
                              f"{', '.join(OPTIMIZERS)}")
    if gradient not in GRADIENTS:
        raise InvalidArgument(f"unknown gradient {gradient!r}; choose one of "
                              f"{', '.join(GRADIENTS)}")
    if method not in METHODS:
        raise InvalidArgument(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if compile not in (True, False, "auto"):
        raise InvalidArgument(f"compile must be True, False or 'auto', got {compile!r}")
    if multistart < 0:
        raise InvalidArgument(f"multistart must be >= 0, got {multistart}")
    max_iter = DEFAULT_MAX_ITER[optimizer] if max_iter is None else int(max_iter)
    if max_iter < 1:
        raise InvalidArgument(f"max_iter must be >= 1, got {max_iter}")
    if not isinstance(observations, Observations):
        observations = load_observations(observations, system=system)

    problem = FitProblem(system, observations, method=method, rtol=rtol, atol=atol,
                         gradient=gradient, options=options, learnable=True)
    if problem.n_params == 0:
        raise InvalidArgument(f"{type(system).__name__} has nothing to fit: every parameter "
                              "is fixed and the initial state is known")
    if optimizer == "lm" and problem.n_data < problem.n_params:
        raise InvalidArgument(f"LM needs at least as many data ({problem.n_data}) as fitted "
                              f"values ({problem.n_params})")
    labels = system.free_labels()
    x0 = problem.get_vector()
    initial_values = _physical_values(system)

    t_eager = math.inf  # the second of two eager solves (the first pays one-off costs)
    for _ in range(2):
        t_probe = time.perf_counter()
        try:
            problem.residuals()
        except SolverError:
            break
        t_eager = min(t_eager, time.perf_counter() - t_probe)
    t_eager = 0.0 if math.isinf(t_eager) else t_eager
    use_compile = compile is True or (compile == "auto" and _auto_compile(
        problem, t_eager, optimizer, max_iter, multistart + 1))

    starts = [x0] + _draw_starts(system, problem, x0, multistart, seed)
    runs: list[tuple[np.ndarray, RunResult]] = []
    interrupted = False
    for i, x_start in enumerate(starts):
        problem.set_vector(x_start)
        problem.compile = use_compile
        desc = f"fit {optimizer}" + (f" start {i}/{len(starts) - 1}" if len(starts) > 1 else "")
        tracker = Tracker(problem, max_iter, progress, desc, callback)
        try:
            if optimizer == "lm":
                run = run_lm(problem, tracker, max_iter=max_iter, ftol=ftol, xtol=xtol,
                             gtol=gtol, method=lm_method)
            elif optimizer == "lbfgs":
                run = run_lbfgs(problem, tracker, max_iter=max_iter, ftol=ftol, gtol=gtol,
                                lr=1.0 if lr is None else lr)
            else:
                run = run_adam(problem, tracker, max_iter=max_iter, gtol=gtol,
                               lr=0.01 if lr is None else lr)
        except KeyboardInterrupt:
            run = tracker.result("interrupted (KeyboardInterrupt)", interrupted=True)
        runs.append((x_start, run))
        if run.interrupted:
            interrupted = True
            break

    best = min(range(len(runs)), key=lambda i: (runs[i][1].chi2, i))
    run = runs[best][1]
    problem.set_vector(run.x)
    problem.compile = use_compile and optimizer == "lm"
    try:
        return _finish(problem, observations, run, runs, best, labels, initial_values,
                       optimizer, gradient, method, rtol, atol, use_compile, interrupted,
                       start_time, fine_points)
    except KeyboardInterrupt:  # a second Ctrl-C while computing the uncertainty
        return _finish(problem, observations, run, runs, best, labels, initial_values,
                       optimizer, gradient, method, rtol, atol, use_compile, True,
                       start_time, fine_points, uncertainty=False)


def _finish(problem: FitProblem, observations: Observations, run: RunResult,
            runs: list[tuple[np.ndarray, RunResult]], best: int, labels: list[str],
            initial_values: np.ndarray, optimizer: str, gradient: str, method: str,
            rtol: float, atol: float, use_compile: bool, interrupted: bool,
            start_time: float, fine_points: int, uncertainty: bool = True) -> FitResult:
    system = problem.system
    P = problem.n_physical
    J = None
    r = None
    if P == 0:
        J = np.zeros((problem.n_data, 0))
    elif uncertainty and math.isfinite(run.chi2):
        try:
            ev = problem.residuals_and_jacobian(physical_only=True)
            J, r = ev.J, ev.r
        except SolverError:
            J = None
    problem.compile = False
    if r is None:
        try:
            r = problem.residuals().r
        except SolverError:
            r = np.full(problem.n_data, np.nan)
    chi2 = problem.chi2(r) if np.all(np.isfinite(r)) else run.chi2
    n_free = problem.n_params
    dof = problem.n_data - n_free
    redchi = chi2 / dof if dof > 0 else math.nan
    aic, bic = information_criteria(chi2, problem.n_data, n_free)
    if J is None:
        J = np.full((problem.n_data, P), np.nan)
    unc = gauss_newton(J, labels, problem.physical_derivatives(), chi2, problem.n_data,
                       n_free, problem.sigma_estimated)
    values = _physical_values(system)
    try:
        fitted = [s.detach().cpu().numpy() for s in problem.predict()]
        fine_t, fine_states = _fine(problem, fine_points)
    except SolverError:
        fitted, fine_t, fine_states = [], [], []
    names = system.free_names()
    sizes = [p.numel() for p in problem.physical]
    stderr, offset = {}, 0
    for name, p, n in zip(names, problem.physical, sizes):
        stderr[name] = unc.stderr[offset:offset + n].reshape(p.shape)
        offset += n
    specs = system.parameter_specs()
    bounds, units = _bounds_units(system, specs)
    starts = []
    for i, (x_start, rr) in enumerate(runs):
        problem.set_vector(x_start)
        init = dict(zip(labels, _physical_values(system).tolist()))
        starts.append({"start": i, "initial": init, "chi2": rr.chi2,
                       "stop_reason": rr.stop_reason, "niter": rr.niter, "nfev": rr.nfev,
                       "success": rr.success})
    problem.set_vector(run.x)
    truth = {}
    for name, value in observations.parameters.items():
        if name in specs and not specs[name].fixed:
            from physode.model.parameter import labels_for

            arr = np.asarray(value, dtype=np.float64)
            truth.update(zip(labels_for(name, arr.shape), arr.reshape(-1).tolist()))
    return FitResult(
        system=system, observations=observations,
        params={k: v.detach().cpu().numpy().copy() for k, v in system.params.items()},
        stderr=stderr, labels=labels, values=values, errors=unc.stderr,
        initial_values=initial_values, bounds=bounds, units=units,
        covariance=unc.covariance, correlation=unc.correlation,
        nonidentifiable=unc.nonidentifiable, chi2=chi2, redchi=redchi, aic=aic, bic=bic,
        n_data=problem.n_data, n_params=P, n_learnable=n_free - P,
        sigma_estimated=problem.sigma_estimated,
        noise_sigma=math.sqrt(redchi) if problem.sigma_estimated and redchi == redchi
        else 1.0,
        stop_reason=run.stop_reason, success=run.success and not interrupted,
        interrupted=interrupted or run.interrupted,
        niter=sum(rr.niter for _, rr in runs), nfev=sum(rr.nfev for _, rr in runs),
        ngrad=sum(rr.ngrad for _, rr in runs), wall_time=time.perf_counter() - start_time,
        optimizer=optimizer, method=method, gradient=gradient if optimizer != "lm" else
        "forward sensitivities", rtol=float(rtol), atol=float(atol), compiled=use_compile,
        starts=starts, history=run.history, fitted=fitted, fine_t=fine_t,
        fine_states=fine_states,
        fixed={k: v.detach().cpu().numpy().copy() for k, v in system.params.items()
               if specs[k].fixed},
        truth=truth,
    )


# ---------------------------------------------------------------------- helpers
def _physical_values(system: System) -> np.ndarray:
    out = []
    for name, p in zip(system.free_names(), system.free_parameters()):
        if name.startswith("y0."):
            out.append(p.detach().reshape(-1))
        else:
            out.append(system.param(name).detach().reshape(-1))
    return torch.cat(out).cpu().numpy().astype(np.float64) if out else np.zeros(0)


def _bounds_units(system: System, specs: Mapping[str, Any]) -> tuple[list, list]:
    bounds, units = [], []
    for name, p in zip(system.free_names(), system.free_parameters()):
        if name.startswith("y0."):
            var = system.layout.by_name[name[3:]]
            b, u = (-math.inf, math.inf), var.units
        else:
            spec = specs[name]
            b, u = (spec.lower, spec.upper), spec.units
        bounds += [b] * p.numel()
        units += [u] * p.numel()
    return bounds, units


def _fine(problem: FitProblem, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Fitted states on ``n`` evenly spaced times from each experiment's t0 to its end."""
    from physode.ode.solve import solve

    y0 = problem.initial_states().detach()
    ts, states = [], []
    with torch.no_grad():
        for e, exp in enumerate(problem.obs.experiments):
            t = np.linspace(exp.t0, float(exp.t[-1]), max(int(n), 2))
            sol = solve(problem.system, y0[e], torch.as_tensor(t, device=problem.device),
                        method=problem.method, rtol=problem.rtol, atol=problem.atol,
                        options=problem.options)
            ts.append(t)
            states.append(sol.ys.cpu().numpy())
    return ts, states


def _auto_compile(problem: FitProblem, t_eager: float, optimizer: str, max_iter: int,
                  n_starts: int) -> bool:
    """The ``compile="auto"`` rule (module docstring)."""
    P = problem.n_params
    size = problem.system.state_size
    if optimizer == "lm":
        factor, expected, size = 1.0 + 8.0 * P, min(max_iter, 15), size * (1 + P)
    elif optimizer == "lbfgs":
        factor, expected = 4.0, 1.5 * min(max_iter, 100)
    else:
        factor, expected = 4.0, float(max_iter)
    estimate = t_eager * factor * expected * n_starts
    return size <= COMPILE_MAX_STATE and estimate > COMPILE_BREAK_EVEN_S


def _draw_starts(system: System, problem: FitProblem, x0: np.ndarray, n: int,
                 seed: int) -> list[np.ndarray]:
    """``n`` starting vectors: physical parameters drawn within their bounds (log-uniform
    for positive ones), initial states and learnable weights kept."""
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    specs = system.parameter_specs()
    out = []
    for _ in range(n):
        x = x0.copy()
        offset = 0
        for name, p in zip(system.free_names(), system.free_parameters()):
            m = p.numel()
            if not name.startswith("y0."):
                spec = specs[name]
                cur = system.param(name).detach().reshape(-1).cpu().numpy()
                drawn = np.array([_draw(spec, float(c), rng) for c in cur])
                u = spec.to_unconstrained(torch.as_tensor(drawn).reshape(p.shape))
                x[offset:offset + m] = u.reshape(-1).numpy()
            offset += m
        out.append(x)
    return out


def _draw(spec: Any, current: float, rng: np.random.Generator) -> float:
    lo, hi = spec.lower, spec.upper
    positive = spec.positive
    if positive:
        a = lo if lo > 0 else (hi * 1e-3 if math.isfinite(hi) else current / 10)
        b = hi if math.isfinite(hi) else current * 10
        a = max(a, current / 10) if not math.isfinite(hi) and lo <= 0 else a
        v = math.exp(rng.uniform(math.log(a), math.log(b)))
    else:
        width = max(abs(current), 1.0)
        a = lo if math.isfinite(lo) else current - width
        b = hi if math.isfinite(hi) else current + width
        v = rng.uniform(a, b)
    # strictly inside the domain (the transforms have no preimage of the boundary)
    span = (b - a) if math.isfinite(b - a) else 1.0
    return float(min(max(v, a + 1e-9 * span), b - 1e-9 * span)) if lo < v < hi else float(
        min(max(v, lo + 1e-6 * span), hi - 1e-6 * span))


__all__ = ["COMPILE_BREAK_EVEN_S", "DEFAULT_MAX_ITER", "OPTIMIZERS", "fit"]
