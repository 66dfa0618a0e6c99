"""Stiff and symplectic solvers: Robertson step counts vs scipy's Radau, and figure-eight
energy error of leapfrog / yoshida4 vs dopri5 at equal function evaluations.

1. Robertson (k = 0.04, 3e7, 1e4; y0 = (1, 0, 0)) on [0, 4e10] at equal (rtol, atol):
   accepted steps of rodas4 and rosenbrock23 against scipy's Radau (order 5, the usual
   stiff reference; its steps are len(sol.t) - 1), error at t = 4e10 against Radau at
   rtol 1e-12, and median wall time.
2. The figure-eight orbit (G = m = 1) over 50 and 500 periods with a fixed budget of
   function evaluations per period: leapfrog (2 per step), yoshida4 (6 per step) and dopri5
   at a fixed step (6 per step). Relative energy error, its maximum, and the drift ratio
   (max over the second half / max over the first half: ~1 bounded, ~2 linear drift).

    .venv/bin/python benchmarks/stiff_symplectic.py [--repeats 3]

Writes benchmarks/results/stiff_symplectic.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import FigureEight, machine_line, markdown_table, median_time, write_result
from scipy.integrate import solve_ivp

import physode

K1, K2, K3 = 0.04, 3e7, 1e4
T_END = 4e10
TOLERANCES = [(1e-4, 1e-8), (1e-6, 1e-10), (1e-8, 1e-12)]


def robertson(t, y):
    r1, r2, r3 = K1 * y[..., 0], K2 * y[..., 1] ** 2, K3 * y[..., 1] * y[..., 2]
    return torch.stack([-r1 + r3, r1 - r2 - r3, r2], -1)


def robertson_np(t, y):
    r1, r2, r3 = K1 * y[0], K2 * y[1] ** 2, K3 * y[1] * y[2]
    return [-r1 + r3, r1 - r2 - r3, r2]


def robertson_jac_np(t, y):
    return [[-K1, K3 * y[2], K3 * y[1]],
            [K1, -2 * K2 * y[1] - K3 * y[2], -K3 * y[1]],
            [0.0, 2 * K2 * y[1], 0.0]]


def radau(rtol: float, atol: float):
    return solve_ivp(robertson_np, (0.0, T_END), [1.0, 0.0, 0.0], method="Radau", rtol=rtol,
                     atol=atol, jac=robertson_jac_np)


def stiff_table(repeats: int) -> str:
    ref = radau(1e-12, 1e-18).y[:, -1]
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, T_END], dtype=torch.float64)
    rows = []
    for rtol, atol in TOLERANCES:
        r = radau(rtol, atol)
        r_steps = len(r.t) - 1
        r_err = np.abs(r.y[:, -1] - ref).max()
        r_time = median_time(lambda rtol=rtol, atol=atol: radau(rtol, atol), repeats)
        rows.append([f"{rtol:g} / {atol:g}", "scipy Radau (analytic J)", r_steps, "-",
                     r.nfev, f"{r_err:.2e}", r_time, "1.00"])
        for method in ("rodas4", "rosenbrock23"):
            def run(method=method, rtol=rtol, atol=atol):
                with torch.no_grad():
                    return physode.solve(robertson, y0, t, method=method, rtol=rtol, atol=atol)

            sol = run()
            err = np.abs(sol.ys[-1].numpy() - ref).max()
            rows.append([f"{rtol:g} / {atol:g}", f"physode {method} (autograd J)",
                         sol.stats.accepted, sol.stats.rejected, sol.stats.nfe, f"{err:.2e}",
                         median_time(run, repeats),
                         f"{sol.stats.accepted / r_steps:.2f}"])
    header = ["rtol / atol", "solver", "accepted steps", "rejected", "nfe",
              "max error at 4e10", "time (s)", "steps / Radau steps"]
    return markdown_table(header, rows)


def energy(y: np.ndarray) -> np.ndarray:
    pos = y[:, :6].reshape(-1, 3, 2)
    kinetic = 0.5 * (y[:, 6:] ** 2).sum(-1)
    potential = sum(-1.0 / np.linalg.norm(pos[:, i] - pos[:, j], axis=-1)
                    for i in range(3) for j in range(i + 1, 3))
    return kinetic + potential


def symplectic_table(cases: list[tuple[int, int]]) -> str:
    """``cases``: (function evaluations per period, number of periods)."""
    func = FigureEight()
    func.position_velocity_split = 6  # positions (r1, r2, r3) first, then velocities
    y0 = FigureEight.y0()
    rows = []
    for per_period, periods in cases:
        span = periods * FigureEight.period
        t = torch.linspace(0.0, span, 20 * periods + 1, dtype=torch.float64)  # 20 / period
        for method, per_step in (("leapfrog", 2), ("yoshida4", 6), ("dopri5", 6)):
            n_steps = per_period * periods // per_step
            t0 = time.perf_counter()
            with torch.no_grad():
                sol = physode.solve(func, y0, t, method=method,
                                    options={"step_size": span / n_steps,
                                             "max_steps": n_steps + 10})
            wall = time.perf_counter() - t0
            E = energy(sol.ys.numpy())
            rel = np.abs((E - E[0]) / E[0])
            half = len(rel) // 2
            drift = rel[half:].max() / max(rel[1: half + 1].max(), 1e-300)
            rows.append([periods, per_period, method, n_steps, sol.stats.nfe,
                         f"{rel.max():.2e}", f"{rel[-1]:.2e}", f"{drift:.2f}", wall])
    header = ["periods", "nfe per period", "method (fixed step)", "steps", "nfe",
              "max rel. energy error", "final rel. energy error",
              "drift ratio (2nd/1st half)", "time (s)"]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    stiff = stiff_table(args.repeats)
    orbit = symplectic_table([(600, 50), (600, 500), (2400, 50)])
    text = "\n".join([
        "Robertson's stiff kinetics on [0, 4e10], y0 = (1, 0, 0): accepted steps of the "
        "Rosenbrock methods vs scipy's Radau (order 5) at equal tolerances.",
        "",
        stiff,
        "",
        "Figure-eight orbit (period 6.3259) at equal function evaluations, fixed steps: "
        "relative energy error; drift ratio ~1 = bounded, ~2 = linear drift.",
        "",
        orbit,
        "",
        f"_{machine_line()}; `benchmarks/stiff_symplectic.py`_",
    ])
    print(text)
    print(f"wrote {write_result('stiff_symplectic', text)}")


if __name__ == "__main__":
    main()
