"""Where a Levenberg-Marquardt iteration's time goes (issue 19, item 7).

SIR (3 states, beta and gamma unknown, I observed in 3 experiments, dopri5 rtol 1e-8): the
time of one plain solve of the model, of one augmented (forward-sensitivity) solve, the
share of the Jacobian assembly, and a whole LM fit per iteration, eager and with the
compiled loop (``compile=True``; its one-off compilation is reported separately).

Run: ``.venv/bin/python benchmarks/lm_cost.py`` (single thread; medians of 5).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

import physode
from physode import Parameter, StateVar, System
from physode.estimate.problem import FitProblem
from physode.estimate.settings import SolverSettings


class SIR(System):
    """Kermack-McKendrick SIR: S' = -beta S I, I' = beta S I - gamma I, R' = gamma I."""

    beta = Parameter(0.3, positive=True)
    gamma = Parameter(0.1, positive=True)
    state_vars = (StateVar("S"), StateVar("I"), StateVar("R"))

    def vector_field(self, t, s):
        infection = self.beta * s["S"] * s["I"]
        recovery = self.gamma * s["I"]
        return {"S": -infection, "I": infection - recovery, "R": recovery}


def median_time(fn, repeat: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    truth = SIR(beta=0.4, gamma=0.12, y0=[0.99, 0.01, 0.0])
    y0s = [[0.99, 0.01, 0.0], [0.95, 0.05, 0.0], [0.9, 0.1, 0.0]]
    obs = physode.simulate(truth, np.linspace(0, 100, 101), y0=y0s, noise=0.002, observe="I")
    problem = FitProblem(SIR(y0=y0s[0]), obs, SolverSettings())
    plain = median_time(problem.residuals)
    sens = median_time(problem.residuals_and_jacobian)
    print(f"plain solve (eager)                 {plain * 1e3:8.1f} ms")
    print(f"residuals + Jacobian (eager)        {sens * 1e3:8.1f} ms  ({sens / plain:.1f} solves)")
    for compile_ in (False, True):
        t0 = time.perf_counter()
        res = physode.fit(SIR(y0=y0s[0]), obs, optimizer="lm", progress=False, compile=compile_)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = physode.fit(SIR(y0=y0s[0]), obs, optimizer="lm", progress=False, compile=compile_)
        again = time.perf_counter() - t0
        print(f"LM fit, compile={compile_!s:5}: first {first:6.2f} s, again {again:6.2f} s, "
              f"{res.nfev} evaluations -> whole fit / evaluations = "
              f"{again / res.nfev * 1e3:7.1f} ms ({again / res.nfev / plain:.1f} eager "
              f"solves; includes the final covariance and trajectories); "
              f"beta={res.values[0]:.4f}")


if __name__ == "__main__":
    main()
