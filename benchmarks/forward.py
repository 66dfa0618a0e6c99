"""Forward solves, physode vs torchdiffeq (dopri5), side by side in one process.

Problems: the figure-eight three-body orbit over one period, and a 32-dimensional MLP
vector field (32 -> 64 -> 32, tanh) on [0, 5]; rtol = atol in {1e-4, 1e-6, 1e-8}.
Reports nfe, accepted steps and the median wall-time ratio physode / torchdiffeq.

    .venv/bin/python benchmarks/forward.py [--repeats 7]
"""

from __future__ import annotations

import argparse

import torch
import torchdiffeq
from common import FigureEight, MLPField, machine_line, markdown_table, median_time, write_result

import physode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    problems = {
        "figure-eight": (FigureEight(), FigureEight.y0(),
                         torch.linspace(0, FigureEight.period, 50, dtype=torch.float64)),
        "mlp-32": (MLPField(32).double(), torch.randn(32, dtype=torch.float64) * 0.5,
                   torch.linspace(0, 5, 50, dtype=torch.float64)),
    }
    rows = []
    for name, (func, y0, t) in problems.items():
        for tol in (1e-4, 1e-6, 1e-8):
            with torch.no_grad():
                sol = physode.solve(func, y0, t, rtol=tol, atol=tol)
                calls = {"n": 0}

                def counted(s, y, func=func, calls=calls):
                    calls["n"] += 1
                    return func(s, y)

                ref = torchdiffeq.odeint(counted, y0, t, rtol=tol, atol=tol)
                err = (sol.ys - ref).abs().max().item()

                def run_ours(func=func, y0=y0, t=t, tol=tol):
                    physode.odeint(func, y0, t, rtol=tol, atol=tol)

                def run_theirs(func=func, y0=y0, t=t, tol=tol):
                    torchdiffeq.odeint(func, y0, t, rtol=tol, atol=tol)

                t_ours = median_time(run_ours, args.repeats)
                t_theirs = median_time(run_theirs, args.repeats)
            rows.append([name, f"{tol:.0e}", sol.stats.nfe, calls["n"],
                         f"{sol.stats.nfe / calls['n']:.2f}", sol.stats.accepted,
                         f"{t_ours * 1e3:.1f}", f"{t_theirs * 1e3:.1f}",
                         f"{t_ours / t_theirs:.2f}", f"{err:.1e}"])
    header = ["problem", "rtol=atol", "nfe physode", "nfe torchdiffeq", "nfe ratio",
              "steps physode", "ms physode", "ms torchdiffeq", "time ratio",
              "max |diff|"]
    table = markdown_table(header, rows)
    text = f"Forward solves, dopri5, float64, medians of {args.repeats} ({machine_line()})\n\n"
    text += table
    print(text)
    write_result("forward", text)


if __name__ == "__main__":
    main()
