"""``physode.profile(result)``: profile likelihoods and their likelihood-ratio intervals.

For each profiled scalar x_i the profile ``Delta(x_i) = min_{others} D - D_min`` (``D`` =
chi2 with known sigma, ``N ln chi2`` with one estimated sigma) is traced by continuation
from the optimum in both directions (Raue et al., Bioinformatics 25:1923-1929, 2009,
sec. 2.3; Venzon & Moolgavkar, Appl. Statist. 37:87-94, 1988, for the crossing):

- The walk runs on the parameter's unconstrained fitting coordinate u_i, so every point is
  inside the bounds, and a bound is reached as u_i runs off (:data:`U_SPAN`).
- Predictor: the other coordinates are extrapolated along the profile path, first along the
  Gauss-Newton regression line ``Cov[:, i] / Cov[i, i]``, then linearly through the last two
  profile points. Corrector: a Levenberg-Marquardt solve of the other coordinates
  (``scipy.optimize.least_squares``, trust-region reflective, on the exact residual Jacobian
  from forward sensitivities, :meth:`FitProblem.residuals_and_jacobian`), warm-started at
  the prediction, so it converges in a few evaluations.
- Adaptive step: for a quadratic profile ``sqrt(Delta)`` grows linearly in u_i, so the step
  aims at an increase of ``sqrt(Delta)`` of ``sqrt(threshold) / STEPS_TO_THRESHOLD`` per
  step, scaled by the observed increase (at most x3, at least x1/2 per step).
- Past the threshold the crossing is located by a safeguarded secant (Illinois) on
  ``sqrt(Delta) - sqrt(threshold)`` in u_i, to a tolerance relative to its distance from
  the optimum.

Each parameter's profile is one independent task (:func:`run_profile` on a
:class:`ProfileTask`, both picklable): with an ``executor`` they run in parallel, each
task on its own copy of the system.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from physode.data.observations import Observations
from physode.errors import InvalidArgument
from physode.estimate.executor import map_tasks
from physode.estimate.inner import InnerSolver, objective
from physode.estimate.problem import FitProblem
from physode.estimate.profile_result import ParameterProfile, ProfileResult, Side
from physode.estimate.result import FitResult
from physode.estimate.settings import SolverSettings
from physode.model.system import System

#: Profiles are walked at most this far (in unconstrained units) from the optimum for a
#: parameter with a bounded or log transform: e^25 ~ 7e10 on a log scale, within 1.4e-11
#: of the range from a bound for a logistic one.
U_SPAN = 25.0
#: The adaptive step aims to cross the threshold in about this many steps.
STEPS_TO_THRESHOLD = 3.0
#: Width (unconstrained units, relative to |u| when above 1) assumed for a parameter that
#: the Gauss-Newton covariance calls non-identifiable: sets the first continuation step.
NONIDENTIFIABLE_SD = 0.3
#: The crossing is located to this fraction of its distance from the optimum.
CROSSING_RTOL = 2e-5


@dataclass(frozen=True)
class ProfileOptions:
    """How a profile is walked (see the module docstring)."""

    threshold: float
    max_steps: int = 40
    max_refine: int = 30
    inner_max_nfev: int = 100


@dataclass
class ProfileTask:
    """Everything one parameter's profile needs; pickles, so it can run on any executor."""

    system: System
    observations: Observations
    solver: SolverSettings
    compile: bool
    x_hat: np.ndarray
    slope: np.ndarray
    sd_u: float
    optimum: float
    index: int
    label: str
    transform: str
    bounds: tuple[float, float]
    options: ProfileOptions
    #: a different random id per task is not needed: the walk is deterministic
    extra: dict[str, float] = field(default_factory=dict)


#: Eager profiles estimated to take longer than this (seconds) are compiled ("auto").
AUTO_COMPILE_S = 20.0
#: Inner evaluations a profile takes, both sides (measured: 30-40 on the pendulum).
EVALUATIONS_PER_PROFILE = 35


def use_compile(compile: bool | str, fitted: bool, estimate_s: float) -> bool:
    """``compile`` as given, or for ``"auto"``: whether the fit was compiled or the eager
    work is estimated above :data:`AUTO_COMPILE_S` seconds."""
    if compile == "auto":
        return fitted or estimate_s > AUTO_COMPILE_S
    if isinstance(compile, bool):
        return compile
    raise InvalidArgument(f"compile must be True, False or 'auto', got {compile!r}")


def chi2_threshold(confidence: float) -> float:
    """The likelihood-ratio threshold ``chi2_1^{-1}(confidence)`` (Raue et al. 2009, eq. 6)."""
    from scipy.stats import chi2

    return float(chi2.ppf(confidence, 1))


def profile(result: FitResult, names: str | Sequence[str] | None = None,
            confidence: float = 0.95, executor: Executor | str | None = None, *,
            max_steps: int = 40, compile: bool | str = "auto") -> ProfileResult:
    """Profile likelihoods of the fitted parameters of ``result`` and their intervals.

    Args:
        result: a :class:`~physode.FitResult` (its system holds the estimate).
        names: parameter names (``"masses"`` profiles every element) or labels
            (``"masses[1]"``, ``"y0.theta"``); default every free physical parameter
            (unknown initial states only when named).
        confidence: of the likelihood-ratio intervals, in (0, 1).
        executor: any :class:`concurrent.futures.Executor` (or ``"processes"``, a local
            pool); each parameter's profile is one task (the tasks and their results
            pickle). Use process-based workers: the forward-mode sensitivities of two
            profiles must not run in threads of one process at the same time.
        max_steps: continuation steps per side before a side is declared open.
        compile: run the inner solves' forward-sensitivity solves in the compiled loop
            (:mod:`physode.ode.compiled_loop`). ``"auto"``: when the fit was compiled, or
            when the eager profiles are estimated to take more than
            :data:`AUTO_COMPILE_S` (about :data:`EVALUATIONS_PER_PROFILE` evaluations per
            parameter at the measured cost of one): a compilation of ~10 s then replaces
            minutes (damped pendulum, two parameters: 47 s eager, 1.4 s compiled).

    Returns:
        :class:`~physode.estimate.profile_result.ProfileResult`, also kept as
        ``result.profiles``. ``interval(label)`` is ``(lower, upper)`` with ``None`` on a
        side where the profile does not cross the threshold (practically non-identifiable;
        ``statement(label)`` says why).
    """
    if not isinstance(result, FitResult):
        raise InvalidArgument(f"profile needs a physode.FitResult, got {type(result).__name__}")
    conf = float(confidence)
    if not 0.0 < conf < 1.0:
        raise InvalidArgument(f"profile: confidence must be in (0, 1), got {confidence!r}")
    if int(max_steps) < 1:
        raise InvalidArgument(f"profile: max_steps must be >= 1, got {max_steps!r}")
    start = time.perf_counter()
    system = result.system
    labels = resolve_labels(system, names)
    problem = FitProblem(system, result.observations, result.settings.solver)
    saved = problem.get_vector()
    try:
        problem.compile = result.settings.compile is True
        t0 = time.perf_counter()
        optimum, x_hat, cov_u, nfev = _optimum(problem)
        per_evaluation = (time.perf_counter() - t0) / max(nfev, 1)
    finally:
        problem.set_vector(saved)
    problem.compile = use_compile(compile, problem.compile,
                                   per_evaluation * EVALUATIONS_PER_PROFILE * len(labels))
    options = ProfileOptions(chi2_threshold(conf), max_steps=int(max_steps))
    all_labels = system.free_labels()
    info = _label_info(system)
    tasks = []
    for label in labels:
        i = all_labels.index(label)
        var = cov_u[i, i]
        slope = cov_u[:, i] / var if var > 0 and math.isfinite(var) else np.zeros_like(x_hat)
        slope = np.where(np.isfinite(slope), slope, 0.0)
        sd = math.sqrt(var) if var > 0 and math.isfinite(var) else 0.0
        if label in result.nonidentifiable or sd == 0.0:
            # J^T J is singular along it: its Gauss-Newton width means nothing; start the
            # walk at a step from NONIDENTIFIABLE_SD
            sd = max(sd, NONIDENTIFIABLE_SD * max(1.0, abs(float(x_hat[i]))))
        transform, bounds = info[label]
        tasks.append(ProfileTask(system, result.observations, result.settings.solver,
                                 problem.compile, x_hat, slope, sd, optimum, i, label,
                                 transform, bounds, options))
    if executor is None:
        try:
            done = [run_profile(t) for t in tasks]
        finally:
            problem.set_vector(saved)
    else:
        for t in tasks:
            t.system = copy.deepcopy(system)
        done = _map(executor, tasks)
    prof = _assemble(result, done, conf, options.threshold, optimum,
                     problem.sigma_estimated, time.perf_counter() - start)
    result.profiles = prof
    return prof


def _map(executor: Executor | str, tasks: list[ProfileTask]) -> list[ParameterProfile]:
    """One task per profile on ``executor`` (:func:`physode.estimate.executor.map_tasks`:
    retries when a worker dies), results in task order."""
    out = map_tasks(run_profile, tasks, executor, desc="profiles")
    if not out.complete:
        raise KeyboardInterrupt("profiles interrupted")
    return out.finished


def resolve_labels(system: System, names: str | Sequence[str] | None) -> list[str]:
    """The free labels to profile: ``names`` may hold parameter names or element labels."""
    labels = system.free_labels()
    if names is None:
        return [lab for lab in labels if not lab.startswith("y0.")]
    wanted = [names] if isinstance(names, str) else list(names)
    out: list[str] = []
    for name in wanted:
        if name in labels:
            hits = [name]
        else:
            hits = [lab for lab in labels if lab.startswith(f"{name}[")]
        if not hits:
            raise InvalidArgument(f"profile: {name!r} is not a fitted parameter of "
                                  f"{type(system).__name__} (fitted: {labels})")
        out += [h for h in hits if h not in out]
    return out


def _label_info(system: System) -> dict[str, tuple[str, tuple[float, float]]]:
    """``{label: (transform, (lower, upper))}`` of every free label."""
    specs = system.parameter_specs()
    out: dict[str, tuple[str, tuple[float, float]]] = {}
    labels = iter(system.free_labels())
    for name, p in zip(system.free_names(), system.free_parameters()):
        if name.startswith("y0."):
            info = ("identity", (-math.inf, math.inf))
        else:
            info = (specs[name].transform, (specs[name].lower, specs[name].upper))
        for _ in range(p.numel()):
            out[next(labels)] = info
    return out


def _optimum(problem: FitProblem) -> tuple[float, np.ndarray, np.ndarray, int]:
    """Polish the fit's estimate with a short LM run of every coordinate; return the
    objective there, the point, the Gauss-Newton covariance of the unconstrained
    vector (pseudo-inverse; scaled by the residual variance when sigma is estimated) and
    the number of evaluations it took."""
    inner = InnerSolver(problem, fixed=None, max_nfev=30)
    x, chi2, J = inner.solve(problem.get_vector())
    if not math.isfinite(chi2) or J is None:
        raise InvalidArgument("profile: the model cannot be solved at the fit's estimate")
    cov = np.linalg.pinv(J.T @ J, rcond=1e-12, hermitian=True)
    if problem.sigma_estimated:
        dof = max(problem.n_data - problem.n_params, 1)
        cov = cov * chi2 / dof
    return objective(chi2, problem), x, cov, inner.nfev


def run_profile(task: ProfileTask) -> ParameterProfile:
    """The profile of one parameter (both sides); runs on any executor."""
    start = time.perf_counter()
    problem = FitProblem(task.system, task.observations, task.solver)
    problem.compile = task.compile
    walker = _Walker(problem, task)
    lower = walker.side(-1)
    upper = walker.side(+1)
    pts = sorted(walker.points, key=lambda p: p[0])
    values = np.array([walker.physical(u) for u, _, _ in pts])
    order = np.argsort(values, kind="stable")
    delta = np.array([d for _, _, d in pts])[order]
    path = np.array([walker.physical_all(x) for _, x, _ in pts])[order]
    problem.set_vector(task.x_hat)
    return ParameterProfile(
        label=task.label, estimate=walker.physical(task.x_hat[task.index]), index=task.index,
        values=values[order], delta=delta, path=path, lower=lower, upper=upper,
        n_inner=walker.inner.n_solves, nfev=walker.inner.nfev,
        wall_time=time.perf_counter() - start, best_objective=walker.best[0],
        best_point=walker.best[1])


class _Walker:
    """Continuation along one parameter's profile (see the module docstring)."""

    def __init__(self, problem: FitProblem, task: ProfileTask) -> None:
        self.problem = problem
        self.task = task
        self.i = task.index
        self.thr = task.options.threshold
        self.inner = InnerSolver(problem, fixed=task.index,
                                 max_nfev=task.options.inner_max_nfev)
        self.points: list[tuple[float, np.ndarray, float]] = [(float(task.x_hat[task.index]),
                                                               task.x_hat.copy(), 0.0)]
        self.best: tuple[float, np.ndarray] = (task.optimum, task.x_hat.copy())

    # ---------------------------------------------------------------- conversions
    def physical_all(self, x: np.ndarray) -> np.ndarray:
        self.problem.set_vector(x)
        return self.problem.physical_values()

    def physical(self, u: float) -> float:
        x = self.task.x_hat.copy()
        x[self.i] = u
        return float(self.physical_all(x)[self.i])

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, u: float, guess: np.ndarray) -> tuple[np.ndarray, float]:
        """Re-optimise the others at u_i = u from ``guess``: (point, Delta); Delta is inf
        where the model cannot be solved."""
        g = guess.copy()
        g[self.i] = u
        x, chi2, _ = self.inner.solve(g)
        if not math.isfinite(chi2):
            return x, math.inf
        obj = objective(chi2, self.problem)
        if obj < self.best[0]:
            self.best = (obj, x.copy())
        delta = obj - self.task.optimum
        self.points.append((u, x, delta))
        return x, delta

    def limit(self, d: int) -> float:
        """How far u_i may go in direction d."""
        u_hat = float(self.task.x_hat[self.i])
        if self.task.transform == "identity":
            return d * math.inf
        if self.task.transform in ("logistic", "log-logistic"):
            return d * U_SPAN
        return u_hat + d * U_SPAN

    # ---------------------------------------------------------------- one side
    def side(self, d: int) -> Side:
        t = self.task
        opts = t.options
        u_prev, x_prev, delta_prev = float(t.x_hat[self.i]), t.x_hat.copy(), 0.0
        slope = t.slope.copy()
        h0 = t.sd_u * math.sqrt(self.thr) / STEPS_TO_THRESHOLD
        h, h_max = h0, (1e3 * h0 if t.transform == "identity" else 3.0)
        u_lim = self.limit(d)
        failures = 0
        for _ in range(opts.max_steps):
            if (u_lim - u_prev) * d <= 0:
                return self._open(d, "bound", u_prev)
            u = u_prev + d * h
            if (u_lim - u) * d < 0:
                u = u_lim
            x, delta = self.evaluate(u, x_prev + (u - u_prev) * slope)
            if not math.isfinite(delta):
                failures += 1
                if failures > 4:
                    return self._open(d, "solver", u_prev)
                h *= 0.25
                continue
            if delta >= self.thr:
                return Side(self.physical(self.refine((u_prev, x_prev, delta_prev),
                                                      (u, x, delta))),
                            "crossed", "crossed")
            ds = math.sqrt(max(delta, 0.0)) - math.sqrt(max(delta_prev, 0.0))
            target = math.sqrt(self.thr) / STEPS_TO_THRESHOLD
            factor = min(max(target / ds, 0.5), 3.0) if ds > 0 else 3.0
            slope = (x - x_prev) / (u - u_prev)
            u_prev, x_prev, delta_prev = u, x, delta
            h = min(h * factor, h_max)
        return self._open(d, "max_steps", u_prev)

    def _open(self, d: int, stop: str, u: float) -> Side:
        side = "upper" if d > 0 else "lower"
        value = self.physical(u)
        lo, hi = self.task.bounds
        bound = hi if d > 0 else lo
        if stop == "bound" and math.isfinite(bound):
            reason = (f"the profile stays below the threshold up to the {side} bound "
                      f"{bound:g} ({self.task.label} = {value:.6g})")
        elif stop == "bound":
            reason = (f"the profile stays below the threshold out to {self.task.label} = "
                      f"{value:.6g}, the search limit on the {side} side")
        elif stop == "solver":
            reason = (f"the model cannot be solved beyond {self.task.label} = {value:.6g}")
        else:
            reason = (f"no crossing within {self.task.options.max_steps} continuation "
                      f"steps, up to {self.task.label} = {value:.6g}")
        return Side(None, stop, reason)

    # ---------------------------------------------------------------- crossing
    def refine(self, a: tuple[float, np.ndarray, float],
               b: tuple[float, np.ndarray, float]) -> float:
        """u_i where Delta = threshold, between ``a`` (below) and ``b`` (above): Illinois
        regula falsi on ``sqrt(Delta) - sqrt(threshold)``."""
        u_hat = float(self.task.x_hat[self.i])
        root_thr = math.sqrt(self.thr)

        def g(delta: float) -> float:
            return math.sqrt(max(delta, 0.0)) - root_thr

        (ua, xa, da), (ub, xb, db) = a, b
        ga, gb = g(da), g(db)
        side = 0
        u = ub
        for _ in range(self.task.options.max_refine):
            u = (ua * gb - ub * ga) / (gb - ga) if gb != ga else 0.5 * (ua + ub)
            if not min(ua, ub) < u < max(ua, ub):
                u = 0.5 * (ua + ub)
            w = (u - ua) / (ub - ua)
            x, delta = self.evaluate(u, xa + w * (xb - xa))
            if not math.isfinite(delta):
                return ub
            gu = g(delta)
            tol = CROSSING_RTOL * abs(u - u_hat)
            if abs(delta - self.thr) <= 1e-7 * self.thr or abs(ub - ua) <= tol:
                return u
            if gu < 0:
                ua, xa, ga = u, x, gu
                if side == -1:
                    gb *= 0.5
                side = -1
            else:
                ub, xb, gb = u, x, gu
                if side == 1:
                    ga *= 0.5
                side = 1
        return u


def _assemble(result: FitResult, done: list[ParameterProfile], confidence: float,
              threshold: float, optimum: float, sigma_estimated: bool,
              wall_time: float) -> ProfileResult:
    labels = result.labels
    gn = {p.label: float(result.errors[labels.index(p.label)]) for p in done}
    units = {lab: u for lab, u in zip(labels, result.units) if u}
    best = min(done, key=lambda p: p.best_objective, default=None)
    better = None
    if best is not None and best.best_objective < optimum - 1e-6 * max(1.0, abs(optimum)):
        better = (f"the profile of {best.label} met a lower objective "
                  f"({best.best_objective:.10g} < {optimum:.10g}): the fit had not reached the "
                  "optimum; re-fit from there and profile again")
    return ProfileResult(
        profiles={p.label: p for p in done}, confidence=confidence, threshold=threshold,
        objective="N ln chi2" if sigma_estimated else "chi2", optimum=optimum,
        gn_stderr=gn, gn_values={p.label: float(result.values[labels.index(p.label)])
                                 for p in done},
        units=units, wall_time=wall_time, better_optimum=better)


__all__ = ["AUTO_COMPILE_S", "ProfileOptions", "ProfileTask", "chi2_threshold", "profile",
           "resolve_labels", "run_profile", "use_compile"]
