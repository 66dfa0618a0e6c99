"""All starts of a PEtab multistart fit as one batched least-squares problem.

:func:`fit_batched` runs :func:`physode.estimate.batch_lm.batch_least_squares` on the
residuals of :class:`~physode.petab.batch_objective.BatchResiduals`: every iteration
evaluates all unfinished starts in one batched forward-sensitivity solve. Gauss–Newton
steps on forward sensitivities are what fits these problems in few iterations (the
approach of Data2Dynamics and of pyPESTO's fides: Fröhlich & Sorger, PLoS Comput Biol
18:e1010322, 2022); batching is what makes them cheap in eager PyTorch, whose cost per
operation is the same for one start as for a hundred.

Two tolerance phases: the starts first run to convergence with the solver at
``rtol = 1e-3`` (``atol = 1e-5``); Gauss–Newton needs Jacobians accurate to a few digits far
from an optimum, not to the final tolerance. Each start is then refined at the problem's
own tolerances (at most ``refine_iter`` iterations) by Fisher scoring — the expected
Fisher information as the curvature (:mod:`physode.estimate.batch_lm`), which converges
fast in fitted noise parameters where ``JᵀJ`` crawls; far from an optimum, ``JᵀJ`` steers
better (Boehm_JProteomeRes2014: 9 of 100 starts reach the optimum with it, none with Fisher
scoring from the start). So the reported optima are those of the accurate objective.
Measured on Boehm_JProteomeRes2014 from 100 starts, eager (one process, 2 cores): a call
for all starts takes 0.23 s in the loose phase against 1.2 s at ``rtol = 1e-6``; the loose
phase ends within 2e-3 of the refined optima, and the whole fit takes about 40 s
(``benchmarks/petab_boehm.py``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from physode.estimate.batch_lm import BatchLSResult, batch_least_squares
from physode.petab.batch_objective import BatchResiduals
from physode.petab.simulate import SolverOptions

LOOSE_RTOL, LOOSE_ATOL = 1e-3, 1e-5
"""Solver tolerances of the first phase (see the module docstring)."""


def fit_batched(problem: Any, starts: np.ndarray, *, max_iter: int = 200,
                loose_iter: int = 100, refine_iter: int = 10, ftol: float = 1e-8,
                fatol: float = 1e-6, gtol: float = 1e-6,
                compile: bool = False) -> list[dict[str, Any]]:
    """One run record per start (the format :func:`physode.petab.fitting.build_result`
    reads): ``x0``, ``x``, ``fun`` (the nllh), ``status``, ``message``, ``nit``, ``nfev``,
    ``history``, ``hess_inv`` (the inverse expected Fisher information on the PEtab scales,
see :class:`~physode.petab.batch_objective.BatchEvaluation`) and
    ``time`` (the wall time shared out evenly: the starts run together). Iterations: at
    most ``loose_iter`` in the loose phase, ``refine_iter`` in the refinement, or
    ``max_iter`` when the problem's own tolerance is already loose (one phase). A start
    ends its loose phase when an accepted step lowers the nllh by less than ``ftol``
    relative to ``½‖r‖²``, and its refinement when by less than ``fatol`` (absolute, as
    fides's default ``fatol``: ``½‖r‖²`` carries a large constant from the noise
    residuals, which makes a relative test loose)."""
    t0 = time.perf_counter()
    lower, upper = (torch.as_tensor(b, dtype=torch.float64) for b in problem.bounds)
    x = torch.as_tensor(np.atleast_2d(starts), dtype=torch.float64)
    opts: SolverOptions = problem.options
    phases = []
    if opts.rtol < LOOSE_RTOL:
        loose = SolverOptions(**{**opts.__dict__, "rtol": LOOSE_RTOL,
                                 "atol": max(opts.atol, LOOSE_ATOL)})
        phases.append((loose, min(loose_iter, max_iter), ftol, 0.0, False))
    phases.append((opts, refine_iter if phases else max_iter, 0.0, fatol, bool(phases)))
    results: list[BatchLSResult] = []
    last: BatchResiduals | None = None
    for options, iters, tol, atol, scoring in phases:
        last = BatchResiduals(problem.objective, options, compile=compile)
        evaluate = last

        def fun(th: torch.Tensor, ev: BatchResiduals = evaluate,
                scoring: bool = scoring) -> tuple[torch.Tensor, ...]:
            out = ev(th)
            if scoring:  # Fisher scoring: the Fisher information as the curvature
                return out.r, out.jac, out.ok, out.fim
            return out.r, out.jac, out.ok

        res = batch_least_squares(fun, x, lower, upper, max_iter=iters, ftol=tol,
                                  fatol=atol, gtol=gtol)
        results.append(res)
        x = res.x
    assert last is not None
    final = last(x)
    offset = final.nllh - 0.5 * (final.r * final.r).sum(1)  # nllh = ½‖r‖² + constant
    wall = time.perf_counter() - t0
    end = results[-1]
    runs = []
    for b in range(len(x)):
        ok = bool(final.ok[b]) and math.isfinite(float(end.cost[b]))
        status = end.status[b] if ok else "failed"
        c = float(offset[b]) if ok else 0.0
        history = [v + c for r in results for v in r.history[b]]
        fim = final.fim[b].numpy()
        runs.append({"x0": np.asarray(starts[b]), "x": x[b].numpy(),
                     "fun": float(final.nllh[b]) if ok else math.inf, "status": status,
                     "message": f"batched Levenberg-Marquardt: {status}",
                     "nit": int(sum(int(r.nit[b]) for r in results)),
                     "nfev": int(sum(int(r.nfev[b]) for r in results)), "history": history,
                     "hess_inv": np.linalg.pinv(fim) if ok else None,
                     "time": wall / len(x)})
    return runs


__all__ = ["LOOSE_ATOL", "LOOSE_RTOL", "fit_batched"]
