"""Stiff kinetics: physode's Rosenbrock methods eager and as compiled whole-solve loops.

Three mass-action networks (issue 18): the two-enzyme cascade (7 species, six rates, 200
outputs on [0, 100]), Robertson (3 species, log-spaced outputs to 1e5) and a generated
chain of Michaelis-Menten steps (``--chain`` steps, 3 species each, >= 50 species by
default). rtol 1e-8, atol 1e-10, float64, one thread. For each: accepted steps, the median
simulation time, and the median time of the gradient of a sum over all outputs with
respect to every rate constant (ACA). Compiled times are measured after compilation; the
one-off compile time is reported as well. The table goes to
``benchmarks/results/stiff_kinetics.md``.

AMICI (CVODES BDF, generated C++) is the peer of issue 18; it is not run here yet.

    .venv/bin/python benchmarks/stiff_kinetics.py [--methods rodas4 rosenbrock23] [--chain 17]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine_line, markdown_table, median_time, write_result

import physode
import systems
from systems.kinetics import ReactionNetwork

TOL = {"rtol": 1e-8, "atol": 1e-10}


def cascade() -> tuple[ReactionNetwork, torch.Tensor]:
    net = ReactionNetwork(["kon1, koff1: E1 + S <=> C1", "kcat1: C1 -> E1 + P",
                           "kon2, koff2: E2 + P <=> C2", "kcat2: C2 -> E2 + Q"],
                          {"kon1": 1e3, "koff1": 1e2, "kcat1": 5, "kon2": 1e3, "koff2": 50,
                           "kcat2": 2}, y0={"S": 1, "E1": 0.01, "E2": 0.01})
    return net, torch.linspace(0.0, 100.0, 200, dtype=torch.float64)


def robertson() -> tuple[ReactionNetwork, torch.Tensor]:
    t = torch.cat([torch.zeros(1), torch.logspace(-5, 5, 60)]).to(torch.float64)
    return systems.get("robertson"), t


def mm_chain(steps: int) -> tuple[ReactionNetwork, torch.Tensor]:
    """S0 -> S1 -> ... through enzymes E_i: E_i + S_{i-1} <=> C_i -> E_i + S_i."""
    reactions, rates = [], {}
    for i in range(1, steps + 1):
        reactions += [f"on{i}, off{i}: E{i} + S{i - 1} <=> C{i}", f"cat{i}: C{i} -> E{i} + S{i}"]
        rates.update({f"on{i}": 1e3, f"off{i}": 50.0 + i, f"cat{i}": 2.0 + 0.1 * i})
    y0 = {"S0": 1.0, **{f"E{i}": 0.01 for i in range(1, steps + 1)}}
    return ReactionNetwork(reactions, rates, y0=y0), torch.linspace(0.0, 50.0, 100,
                                                                    dtype=torch.float64)


def measure(net: ReactionNetwork, t: torch.Tensor, method: str, compile_: bool,
            repeats: int) -> list[object]:
    y0 = net.y0

    def simulate() -> physode.Solution:
        with torch.no_grad():
            return physode.solve(net, y0, t, method=method, compile=compile_, **TOL)

    def gradient() -> None:
        net.zero_grad()
        ys = physode.odeint(net, y0, t, method=method, compile=compile_, **TOL)
        ys.sum().backward()

    t0 = time.perf_counter()
    sol = simulate()
    gradient()
    first = time.perf_counter() - t0
    sim = median_time(simulate, repeats=repeats, warmup=0)
    grad = median_time(gradient, repeats=repeats, warmup=0)
    return [method, "compiled" if compile_ else "eager", sol.stats.accepted, sim * 1e3,
            grad * 1e3, first if compile_ else "-"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["rodas4", "rosenbrock23"])
    parser.add_argument("--chain", type=int, default=17, help="Michaelis-Menten steps")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    problems = {"cascade (7 species)": cascade(), "Robertson (3 species)": robertson(),
                f"MM chain ({3 * args.chain + 1} species)": mm_chain(args.chain)}
    rows = []
    for label, (net, t) in problems.items():
        for method in args.methods:
            for compile_ in (False, True):
                row = [label, *measure(net, t, method, compile_, args.repeats)]
                print(row, flush=True)
                rows.append(row)
    header = ["problem", "method", "mode", "steps", "simulation ms", "gradient ms",
              "first call s (compile)"]
    text = (f"Stiff kinetics, rtol 1e-8, atol 1e-10, float64 ({machine_line()})\n\n"
            + markdown_table(header, rows))
    print(text)
    print(f"written to {write_result('stiff_kinetics', text)}")


if __name__ == "__main__":
    main()
