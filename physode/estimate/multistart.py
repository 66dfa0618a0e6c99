"""The starts of a fit: one optimiser run per start, serially or on an executor, streamed
to a results store and resumable.

:func:`run_starts` is what :func:`physode.fit` calls. Without an executor and a store it is
the plain loop (each start on the caller's problem, its own progress bar, the callback
called). With an executor (:mod:`physode.estimate.executor`) the problem and settings
travel once per worker process as a :class:`~physode.estimate.executor.Shared` value — a
worker unpickles, compiles and reuses them for every start it runs — and one progress bar
counts starts done and the best chi-square. The starts are drawn in this process from the
seed (:func:`physode.estimate.starts.draw_starts`), and a run depends only on its start,
so the runs — and the fit — are identical whether they ran serially or on any executor.

With a store (:mod:`physode.estimate.store`) each finished start is written as it
completes (section ``"starts"``); ``resume`` loads the finished ones, checks they were
made for the same study (settings and the same start vectors), and runs only the others.
A larger ``multistart`` on resume extends the study: the first starts drawn from a seed do
not depend on how many are drawn.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from physode.errors import InvalidArgument
from physode.estimate.distributed import is_main_rank
from physode.estimate.executor import Shared, check_executor, map_tasks
from physode.estimate.optimizers import RunResult, Tracker, run_adam, run_lbfgs, run_lm
from physode.estimate.problem import FitProblem
from physode.estimate.settings import FitSettings
from physode.estimate.starts import draw_starts
from physode.estimate.store import ResultStore

#: The store section multistart runs are written to.
SECTION = "starts"

Runs = list[tuple[np.ndarray, RunResult]]


@dataclass
class StartRecord:
    """One finished start, as stored: where it began and the optimiser's outcome."""

    start: int
    x_start: np.ndarray
    x: np.ndarray
    chi2: float
    stop_reason: str
    status: str
    niter: int = 0
    nfev: int = 0
    ngrad: int = 0
    history: list[float] = field(default_factory=list)
    error: str | None = None
    wall_time: float = math.nan

    @classmethod
    def of(cls, start: int, x_start: np.ndarray, run: RunResult,
           wall_time: float) -> StartRecord:
        return cls(start, np.asarray(x_start, dtype=np.float64),
                   np.asarray(run.x, dtype=np.float64), float(run.chi2), run.stop_reason,
                   run.status, int(run.niter), int(run.nfev), int(run.ngrad),
                   [float(v) for v in run.history], run.error, float(wall_time))

    def run(self) -> RunResult:
        return RunResult(np.asarray(self.x, dtype=np.float64), float(self.chi2),
                         self.stop_reason, self.status, int(self.niter), int(self.nfev),
                         int(self.ngrad), list(self.history), self.error)


def run_start(problem: FitProblem, settings: FitSettings, x_start: np.ndarray, desc: str,
              progress: bool) -> RunResult:
    """One optimiser run from ``x_start`` on ``problem`` (Ctrl-C: the best point so far,
    marked interrupted)."""
    s = settings
    problem.set_vector(x_start)
    problem.compile = s.compile is True
    tracker = Tracker(problem, s.max_iter, progress, desc, s.callback)
    try:
        if s.optimizer == "lm":
            return run_lm(problem, tracker, max_iter=s.max_iter, ftol=s.ftol, xtol=s.xtol,
                          gtol=s.gtol, method=s.lm_method)
        if s.optimizer == "lbfgs":
            return run_lbfgs(problem, tracker, max_iter=s.max_iter, ftol=s.ftol, gtol=s.gtol,
                             lr=s.lr)
        return run_adam(problem, tracker, max_iter=s.max_iter, gtol=s.gtol, lr=s.lr)
    except KeyboardInterrupt:
        return tracker.interrupted()


def _start_task(task: tuple[Shared[tuple[FitProblem, FitSettings]], int, np.ndarray, int,
                bool]) -> StartRecord:
    """A start as a task: runs in a worker (or here, on the caller's problem)."""
    shared, i, x_start, n, progress = task
    (problem, settings), _ = shared.local()
    desc = f"fit {settings.optimizer}" + (f" start {i}/{n - 1}" if n > 1 else "")
    t0 = time.perf_counter()
    run = run_start(problem, settings, x_start, desc, progress)
    return StartRecord.of(i, x_start, run, time.perf_counter() - t0)


def study(problem: FitProblem, settings: FitSettings) -> dict[str, Any]:
    """What a stored start depends on besides its start vector (checked on resume)."""
    s = settings
    return {"system": type(problem.system).__name__, "labels": problem.system.free_labels(),
            "n_params": problem.n_params, "n_data": problem.n_data, "optimizer": s.optimizer,
            "method": s.method, "rtol": s.rtol, "atol": s.atol, "gradient": s.solver.gradient,
            "max_iter": s.max_iter, "ftol": s.ftol, "xtol": s.xtol, "gtol": s.gtol,
            "lr": s.lr, "lm_method": s.lm_method, "seed": s.seed}


def run_starts(problem: FitProblem, settings: FitSettings, *,
               executor: Executor | str | None = None,
               store: str | os.PathLike[str] | ResultStore | None = None,
               resume: bool = False) -> tuple[Runs, bool]:
    """Every start's run, in start order, and whether starts were abandoned (Ctrl-C with
    an executor: the finished ones are kept, the others dropped).

    Serially, the loop stops at the first interrupted run (which is kept, as the best
    point so far). Interrupted runs are never stored, so a resumed study redoes them.
    """
    check_executor(executor)
    if executor is not None and settings.callback is not None:
        raise InvalidArgument("callback cannot be used with executor=: the runs happen in "
                              "other processes (watch the progress bar, or use a store)")
    x0 = problem.get_vector()
    starts = [x0] + draw_starts(problem.system, x0, settings.multistart, settings.seed)
    n = len(starts)
    section = None
    if store is not None:
        st = store if isinstance(store, ResultStore) else ResultStore(store, resume=resume)
        st.write = st.write and is_main_rank()  # data-parallel: rank 0 writes, all read
        section = st.section(SECTION, StartRecord, study(problem, settings),
                             skip=lambda r: r.status == "interrupted")
        for i, rec in section.done().items():
            if i < n and not np.array_equal(rec.x_start, starts[i]):
                raise InvalidArgument(
                    f"{section.where}: start {i} began at {rec.x_start.tolist()}, but this fit "
                    f"draws {starts[i].tolist()} (another initial point or system); resume "
                    "with the same system, initial values and seed, or give another file")
    serial = executor is None
    shared = Shared((problem, settings))
    tasks = [(shared, i, x, n, serial and settings.progress) for i, x in enumerate(starts)]
    out = map_tasks(_start_task, tasks, executor, store=section,
                    progress=settings.progress and not serial,
                    desc=f"fit {settings.optimizer} starts", score=lambda r: r.chi2,
                    stop=lambda r: r.status == "interrupted")
    runs = [(starts[i], rec.run()) for i, rec in enumerate(out.results) if rec is not None]
    abandoned = out.interrupted and not any(r.interrupted for _, r in runs)
    if not runs:  # interrupted before any start finished: the initial point
        problem.set_vector(x0)
        runs = [(x0, RunResult(x0, math.inf, "interrupted before any start finished",
                               "interrupted"))]
        abandoned = False
    return runs, abandoned


__all__ = ["SECTION", "StartRecord", "run_start", "run_starts", "study"]
