"""``physode.sample(result)``: posterior draws of a fit's parameters, as arviz InferenceData.

Two samplers of the density in :mod:`physode.estimate.posterior` (likelihood of the fit,
priors or flat on the declared scale, whitened by the Gauss-Newton covariance):

- ``"nuts"``: the No-U-Turn sampler (Hoffman & Gelman, JMLR 15:1593-1623, 2014) of
  :class:`pyro.infer.mcmc.NUTS` with a ``potential_fn`` whose gradient is physode's
  gradient of the fit objective (ACA by default), with step size and diagonal mass
  matrix adapted during warm-up. Each chain is one task, so chains run in parallel on an
  ``executor``.
- ``"emcee"``: the ensemble sampler of Foreman-Mackey et al. (PASP 125:306, 2013),
  gradient-free, with an equal mix of differential-evolution moves (ter Braak & Vrugt,
  Stat. Comput. 18:435-446, 2008) and kernel-density moves (emcee's ``KDEMove``): on the
  whitened, near-Gaussian posterior these mix far faster than the default stretch move
  (Goodman & Weare 2010), whose walkers needed ~5x more steps here to reach R-hat 1.01.
  Its walkers are the chains of the InferenceData (at least ``8 P`` walkers).

Chains start at the estimate plus a draw from the Gauss-Newton covariance. Draws are
returned in physical units, one posterior variable per fitted parameter name (its declared
shape after ``chain, draw``); ``sample_stats`` hold ``lp`` (log posterior, up to a
constant) and, for NUTS, ``diverging``. R-hat and ESS come from arviz
(``arviz.summary(idata)``); ``idata.to_netcdf(path)`` saves it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from physode.data.observations import Observations
from physode.errors import InvalidArgument
from physode.estimate.executor import map_tasks
from physode.estimate.posterior import Potential, torch_potential, whitening
from physode.estimate.problem import FitProblem
from physode.estimate.profiles import use_compile
from physode.estimate.result import FitResult
from physode.estimate.settings import SolverSettings
from physode.model.system import System

METHODS = ("nuts", "emcee")


@dataclass
class ChainTask:
    """One chain (NUTS) or the whole ensemble (emcee); pickles, for any executor."""

    method: str
    system: System
    observations: Observations
    solver: SolverSettings
    center: np.ndarray
    L: np.ndarray
    z0: np.ndarray
    draws: int
    warmup: int
    seed: int
    target_accept: float = 0.8
    max_tree_depth: int = 8
    compile: bool = False


#: Gradients per NUTS iteration assumed when ``compile="auto"`` estimates the eager cost
#: (a tree of depth 3 on the whitened posterior).
GRADIENTS_PER_ITERATION = 7


@dataclass
class ChainOutput:
    """Unconstrained draws ``(chains, draws, P)`` with their log posterior and stats."""

    u: np.ndarray
    lp: np.ndarray
    diverging: np.ndarray
    n_grad: int
    n_eval: int
    wall_time: float


def sample(result: FitResult, method: str = "nuts", draws: int = 1000, chains: int = 4,
           seed: int = 0, executor: Executor | str | None = None, *, warmup: int | None = None,
           target_accept: float = 0.8, max_tree_depth: int = 8,
           compile: bool | str = "auto") -> Any:
    """Posterior draws of the fitted physical parameters of ``result``.

    Args:
        result: a :class:`~physode.FitResult`; its system holds the estimate. Learnable
            weights (if any) stay at their fitted values.
        method: ``"nuts"`` (gradient-based, default) or ``"emcee"`` (gradient-free).
        draws: kept draws per chain (per walker for emcee), after ``warmup``.
        chains: NUTS chains; for emcee the number of walkers is ``max(chains, 8 P)``
            rounded up to even (the stretch move mixes poorly with few walkers).
        seed: integer >= 0; chain c uses ``seed + c``.
        executor: any :class:`concurrent.futures.Executor`; each NUTS chain is one task
            (emcee's ensemble is one task).
        warmup: adaptation (NUTS) or burn-in (emcee) iterations, not kept; default
            ``draws // 2`` for NUTS, ``draws`` for emcee.
        target_accept, max_tree_depth: NUTS settings.
        compile: solve in the compiled loops (ACA's reverse sweep included).
            ``"auto"``: when the fit was compiled, or when NUTS is estimated to take more
            than 20 s eagerly (:data:`GRADIENTS_PER_ITERATION` gradients per iteration at
            the measured cost of one residual evaluation with its Jacobian).

    Returns:
        ``arviz.InferenceData`` (also kept as ``result.samples``) with ``posterior``,
        ``sample_stats`` and attributes naming the sampler and the priors.
    """
    import arviz as az

    if not isinstance(result, FitResult):
        raise InvalidArgument(f"sample needs a physode.FitResult, got {type(result).__name__}")
    if method not in METHODS:
        raise InvalidArgument(f"sample: method must be one of {METHODS}, got {method!r}")
    for name, value, low in (("draws", draws, 1), ("chains", chains, 1), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise InvalidArgument(f"sample: {name} must be an integer >= {low}, got {value!r}")
    if warmup is not None and (not isinstance(warmup, (int, np.integer)) or warmup < 0):
        raise InvalidArgument(f"sample: warmup must be an integer >= 0, got {warmup!r}")
    start = time.perf_counter()
    system = result.system
    problem = FitProblem(system, result.observations, result.settings.solver, learnable=False)
    center = problem.get_vector()
    if problem.sigma_estimated and any(s.prior is not None and not s.fixed
                                       for s in system.parameter_specs().values()):
        raise InvalidArgument("sample: priors with a noise level estimated from the residuals "
                              "are not supported; give sigma in the observations")
    if center.size == 0:
        raise InvalidArgument("sample: the fit has no physical parameter to sample")
    fitted = result.settings.compile is True
    # compiled from the start when that is decided already: the fit compiled these graphs
    problem.compile = use_compile(compile, fitted, 0.0)
    try:
        t0 = time.perf_counter()
        ev = problem.residuals_and_jacobian()
        per_gradient = time.perf_counter() - t0
    finally:
        problem.set_vector(center)
    if ev.J is None or not np.all(np.isfinite(ev.r)):
        raise InvalidArgument("sample: the model cannot be solved at the fit's estimate")
    L = whitening(ev.J, problem.chi2(ev.r), problem)
    P = center.size
    rng = np.random.default_rng(seed)
    n_walk = max(chains, 8 * P) if method == "emcee" else chains
    n_walk += n_walk % 2 if method == "emcee" else 0
    z0 = _starts(Potential(problem, center, L), rng, n_walk)
    problem.set_vector(center)
    warm = warmup if warmup is not None else (draws // 2 if method == "nuts" else draws)
    eager_s = (per_gradient * GRADIENTS_PER_ITERATION * chains * (draws + warm)
               if method == "nuts" else 0.0)
    compiled = problem.compile or use_compile(compile, fitted, eager_s)

    def task(z: np.ndarray, s: int) -> ChainTask:
        sys_copy = copy.deepcopy(system) if executor is not None else system
        return ChainTask(method, sys_copy, result.observations, result.settings.solver,
                         center, L, z, int(draws), int(warm), int(s), float(target_accept),
                         int(max_tree_depth), compiled)

    tasks = ([task(z0[c], seed + c) for c in range(chains)] if method == "nuts"
             else [task(z0, seed)])
    try:
        outs = _run(tasks, executor)
    finally:
        problem.set_vector(center)
    out = ChainOutput(np.concatenate([o.u for o in outs]), np.concatenate([o.lp for o in outs]),
                      np.concatenate([o.diverging for o in outs]),
                      sum(o.n_grad for o in outs), sum(o.n_eval for o in outs),
                      time.perf_counter() - start)
    idata = _inference_data(az, problem, center, out, method, seed)
    result.samples = idata
    return idata


def _starts(potential: Potential, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` whitened starts ``z ~ N(0, I)`` (u = estimate + covariance draw) with a finite
    posterior; after 20 failed draws a start shrinks towards the estimate."""
    P = potential.center.size
    out = np.zeros((n, P))
    for c in range(n):
        scale = 1.0
        for attempt in range(40):
            z = rng.standard_normal(P) * scale
            if math.isfinite(potential.value(z)):
                out[c] = z
                break
            if attempt >= 20:
                scale *= 0.5
    return out


def _run(tasks: list[ChainTask], executor: Executor | str | None) -> list[ChainOutput]:
    """The chains in this process, or one task each on ``executor``
    (:func:`physode.estimate.executor.map_tasks`)."""
    if executor is None:
        return [run_chain(t) for t in tasks]
    out = map_tasks(run_chain, tasks, executor, desc="chains")
    if not out.complete:
        raise KeyboardInterrupt("sampling interrupted")
    return out.finished


def run_chain(task: ChainTask) -> ChainOutput:
    """Run one NUTS chain or the emcee ensemble of ``task``; any executor can run it."""
    start = time.perf_counter()
    problem = FitProblem(task.system, task.observations, task.solver, learnable=False)
    problem.compile = task.compile
    saved = problem.get_vector()
    potential = Potential(problem, task.center, task.L)
    try:
        runner: Callable[[ChainTask, Potential], tuple[np.ndarray, np.ndarray, np.ndarray]]
        runner = _nuts if task.method == "nuts" else _emcee
        z, lp, div = runner(task, potential)
    finally:
        problem.set_vector(saved)
    u = task.center + z @ task.L.T
    return ChainOutput(u, lp, div, potential.n_grad, potential.n_eval,
                       time.perf_counter() - start)


def _nuts(task: ChainTask, potential: Potential) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One NUTS chain: ``(z (1, draws, P), lp (1, draws), diverging (1, draws))``."""
    import pyro
    from pyro.infer.mcmc import MCMC, NUTS

    pyro.set_rng_seed(task.seed)
    kernel = NUTS(potential_fn=torch_potential(potential), adapt_step_size=True,
                  adapt_mass_matrix=True, full_mass=False,
                  target_accept_prob=task.target_accept, max_tree_depth=task.max_tree_depth)
    z0 = torch.as_tensor(task.z0, dtype=torch.float64)
    mcmc = MCMC(kernel, num_samples=task.draws, warmup_steps=task.warmup,
                initial_params={"z": z0}, disable_progbar=True)
    mcmc.run()
    z = mcmc.get_samples()["z"].detach().cpu().numpy().astype(np.float64)
    diverging = np.zeros(task.draws, dtype=bool)
    divs = mcmc.diagnostics().get("divergences", {})
    for idx in next(iter(divs.values()), []) if isinstance(divs, dict) else []:
        if 0 <= int(idx) < task.draws:
            diverging[int(idx)] = True
    lp = np.array([-potential.known_value(zi) for zi in z]) if z.size else np.zeros(0)
    return z[None], lp[None], diverging[None]


def _emcee(task: ChainTask, potential: Potential) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The emcee ensemble: ``(z (walkers, draws, P), lp, diverging (all False))``."""
    import emcee

    def log_prob(z: np.ndarray) -> float:
        U = potential.value(z)
        return -U if math.isfinite(U) else -math.inf

    n_walk, P = task.z0.shape
    moves = [(emcee.moves.DEMove(), 0.5), (emcee.moves.KDEMove(), 0.5)]
    sampler = emcee.EnsembleSampler(n_walk, P, log_prob, moves=moves)
    sampler.random_state = np.random.RandomState(task.seed).get_state()
    state = task.z0
    if task.warmup:
        state = sampler.run_mcmc(state, task.warmup, progress=False)
        sampler.reset()
    sampler.run_mcmc(state, task.draws, progress=False)
    z = np.swapaxes(sampler.get_chain(), 0, 1)  # (walkers, draws, P)
    lp = np.swapaxes(sampler.get_log_prob(), 0, 1)
    return z, lp, np.zeros(lp.shape, dtype=bool)


def _inference_data(az: Any, problem: FitProblem, center: np.ndarray, out: ChainOutput,
                    method: str, seed: int) -> Any:
    """Physical draws per parameter name (declared shapes) as arviz InferenceData."""
    system = problem.system
    chains, draws, P = out.u.shape
    flat = out.u.reshape(-1, P)
    phys = np.empty_like(flat)
    for k in range(flat.shape[0]):
        problem.set_vector(flat[k])
        phys[k] = problem.physical_values()
    problem.set_vector(center)
    posterior: dict[str, np.ndarray] = {}
    dims: dict[str, list[str]] = {}
    coords: dict[str, Any] = {}
    offset = 0
    for name, p in zip(system.free_names(), system.free_parameters()):
        n = p.numel()
        shape = tuple(p.shape)
        posterior[name] = phys[:, offset:offset + n].reshape(chains, draws, *shape)
        dims[name] = [f"{name}_dim_{j}" for j in range(len(shape))]
        for j, size in enumerate(shape):
            coords[f"{name}_dim_{j}"] = np.arange(size)
        offset += n
    stats = {"lp": out.lp.reshape(chains, draws)}
    if method == "nuts":
        stats["diverging"] = out.diverging.reshape(chains, draws)
    log_prior = Potential(problem, center, np.eye(P)).log_prior
    attrs = {"sampler": "pyro NUTS (ACA gradients)" if method == "nuts" else "emcee ensemble",
             "method": method, "seed": seed, "priors": log_prior.describe(system),
             "likelihood": ("Gaussian, sigma integrated out (Jeffreys)"
                            if problem.sigma_estimated else "Gaussian, known sigma"),
             "n_gradients": out.n_grad, "n_evaluations": out.n_eval,
             "sampling_time_s": out.wall_time}
    idata = az.from_dict(posterior=posterior, sample_stats=stats, coords=coords, dims=dims)
    idata.posterior.attrs.update(attrs)
    return idata


__all__ = ["METHODS", "ChainOutput", "ChainTask", "run_chain", "sample"]
