"""Stiff kinetics: physode's Rosenbrock methods against AMICI, and the cascade fit.

Three mass-action networks (issue 18): the two-enzyme cascade (7 species, six rates, 200
outputs on [0, 100]), Robertson (3 species, log-spaced outputs to 1e5) and a generated
chain of Michaelis-Menten steps (``--chain`` steps, 3 species each, >= 50 species by
default). rtol 1e-8, atol 1e-10, float64, one thread. For each network and method
(``rodas5p``, ``rodas4``): accepted steps, the median simulation time, the median time of
the ACA gradient of a sum over all outputs with respect to every rate constant, and the
median time of the forward sensitivities of every output to every rate constant (the
staggered Rosenbrock solve of :mod:`physode.ode.sensitivity_batch`, which LM fits use;
from them the gradient of any function of the outputs is a product). Compiled times are
measured after compilation; the one-off compile time (simulation, gradient and
sensitivity graphs together) is reported as well. Medians: of 3 runs for the eager times
(``--repeats``), of 15 for the compiled and AMICI times (``--compiled-repeats``; with 3 the
compiled cascade simulation read 9.1-9.2 ms where 15 and more read 7.0-7.2 ms).

The peer is AMICI (CVODES BDF with generated C++; forward sensitivities by CVODES's
staggered direct method), in its own virtualenv (``benchmarks/peers/amici_kinetics.py``)
on the same networks written as SBML, the same outputs and tolerances, run for each
network right before physode's compiled timings of it (the eager ones come after), so
that a ratio compares measurements seconds apart, not minutes. ``ratio`` columns
are physode compiled over AMICI. ``final-state error`` is ``max |y - y_ref| / (atol + rtol
|y_ref|)`` at the last output against scipy's Radau at rtol 1e-12: the global error in
units of the tolerance.

The compiled ACA gradient is measured for networks up to ``--compiled-gradient-species``
(default 200). Until networks ran the compiled loops as one explicit rate vector
(:mod:`physode.ode.explicit_field`), compiling the ACA loop of the 52-species chain with
RODAS5P kept g++ busy for over 15 minutes on one generated C++ function of 1.4 MB, and
the default was 40.

``--fit``: the six-rate cascade fit of issue 18 (three experiments with different
substrate and enzyme amounts, all species observed with noise 1e-4, rates started a
factor 2-3 off), LM with each method: wall time eager, compiled (first fit, with compiling)
and compiled again (after compilation).

The tables go to ``benchmarks/results/stiff_kinetics.md``.

    .venv/bin/python benchmarks/stiff_kinetics.py [--chain 17] [--fit] [--no-peer]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from common import machine_line, markdown_table, median_time, write_result
from peer_env import run_peer

import physode
import systems
from physode.ode.sensitivity_batch import solve_sensitivities
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


def sensitivities(net: ReactionNetwork, t: torch.Tensor, method: str, compiled: bool) -> None:
    """States and their sensitivities to every ln(rate) at every output."""
    model = net.sensitivity_model()
    assert model is not None
    k = model.parameters().detach()[None]
    n, R = len(net.species), k.shape[1]
    res = solve_sensitivities(model.field, net.y0.detach()[None], torch.zeros(1, n, R,
                              dtype=k.dtype), k, torch.diag_embed(k), t, t0=float(t[0]),
                              compiled_loop=compiled, method=method, **TOL)
    assert bool(res.ok.all())


def measure(net: ReactionNetwork, t: torch.Tensor, method: str, compile_: bool,
            repeats: int, with_gradient: bool = True) -> dict[str, Any]:
    y0 = net.y0

    def simulate() -> physode.Solution:
        with torch.no_grad():
            return physode.solve(net, y0, t, method=method, compile=compile_, **TOL)

    def gradient() -> None:
        net.zero_grad()
        ys = physode.odeint(net, y0, t, method=method, compile=compile_, **TOL)
        ys.sum().backward()

    def forward() -> None:
        sensitivities(net, t, method, compile_)

    t0 = time.perf_counter()
    sol = simulate()
    if with_gradient:
        gradient()
    forward()
    first = time.perf_counter() - t0
    return {"steps": sol.stats.accepted, "first_s": first,
            "sim": median_time(simulate, repeats=repeats, warmup=0) * 1e3,
            "grad": (median_time(gradient, repeats=repeats, warmup=0) * 1e3
                     if with_gradient else "-"),
            "sens": median_time(forward, repeats=repeats, warmup=0) * 1e3,
            "final": sol.ys[-1].detach()}


def reference_final(net: ReactionNetwork, t: torch.Tensor) -> torch.Tensor:
    """The final state by scipy's Radau at rtol 1e-12 with the closed-form Jacobian."""
    import numpy as np
    from scipy.integrate import solve_ivp

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        return net(torch.tensor(_t), torch.from_numpy(y)).detach().numpy()

    def jac(_t: float, y: np.ndarray) -> np.ndarray:
        out: np.ndarray = net.jacobian(torch.tensor(_t), torch.from_numpy(y)).detach().numpy()
        return out

    sol = solve_ivp(rhs, (float(t[0]), float(t[-1])), net.y0.detach().numpy(),
                    method="Radau", jac=jac, rtol=1e-12, atol=1e-16)
    return torch.from_numpy(sol.y[:, -1])


def relative_error(y: torch.Tensor, exact: torch.Tensor) -> float:
    """``max |y - exact| / (atol + rtol |exact|)``: the final state's error in units of
    the tolerance."""
    scale = TOL["atol"] + TOL["rtol"] * exact.abs()
    return float(((y.to(exact) - exact).abs() / scale).max())


def peer_spec(name: str, net: ReactionNetwork, t: torch.Tensor) -> dict[str, object]:
    """The network as the AMICI peer reads it."""
    rates = net.rate_constants().detach().tolist()
    reactions = [{"rate": r.label, "value": k, "reactants": [list(x) for x in r.reactants],
                  "products": [list(x) for x in r.products]}
                 for r, k in zip(net.reactions, rates)]
    return {"name": name, "species": list(net.species), "y0": net.y0.detach().tolist(),
            "reactions": reactions, "times": t.tolist(), **TOL}


def cascade_fit(method: str, repeats: int) -> list[list[object]]:
    """Issue 18's six-rate cascade fit: three experiments, LM."""
    net, t = cascade()
    truth = {k: float(v.detach()) for k, v in net.params.items()}
    sp = list(net.species)
    y0 = net.y0.detach().expand(3, -1).clone()
    y0[1, sp.index("S")] = 0.5
    y0[2, sp.index("S")], y0[2, sp.index("E1")] = 2.0, 0.02
    obs = physode.simulate(net, t[1:].numpy(), y0=y0.numpy(), t0=0.0, noise=1e-4, seed=1,
                           method="rodas4")
    start = {k: v * f for (k, v), f in zip(truth.items(), (2, 0.5, 3, 0.5, 2, 1 / 3))}
    rows: list[list[object]] = []
    for label, compile_ in (("eager", False), ("compiled, first fit", True),
                            ("compiled, after compilation", True)):
        walls = []
        for _ in range(repeats if label == "compiled, after compilation" else 1):
            net.set_params(**start)
            t0 = time.perf_counter()
            res = physode.fit(net, obs, method=method, optimizer="lm", progress=False,
                              compile=compile_, **TOL)
            walls.append(time.perf_counter() - t0)
        worst = max(abs(v / truth[k] - 1) / (e / truth[k])
                    for k, v, e in zip(res.labels, res.values, res.errors))
        rows.append([method, label, res.convergence.niter, res.convergence.nfev,
                     sorted(walls)[len(walls) // 2], res.statistics.chi2, worst])
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=17, help="Michaelis-Menten steps")
    parser.add_argument("--methods", nargs="+", default=["rodas5p", "rodas4"])
    parser.add_argument("--compiled-gradient-species", type=int, default=200,
                        help="compile the ACA loop only up to this many species (its g++ "
                             "build grows steeply with the network)")
    parser.add_argument("--repeats", type=int, default=3, help="eager timings (seconds each)")
    parser.add_argument("--compiled-repeats", type=int, default=15,
                        help="compiled and AMICI timings (milliseconds each: more samples "
                             "steady the medians on a noisy machine)")
    parser.add_argument("--fit", action="store_true", help="also the cascade fit")
    parser.add_argument("--no-peer", action="store_true", help="leave AMICI out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    problems = {"cascade (7 species)": cascade(), "Robertson (3 species)": robertson(),
                f"MM chain ({3 * args.chain + 1} species)": mm_chain(args.chain)}
    rows: list[list[object]] = []
    tight_rows: list[list[object]] = []
    for i, (label, (net, t)) in enumerate(problems.items()):
        # AMICI's timings of this problem right before physode's compiled ones: the
        # machine's speed drifts over minutes, and the ratio should not measure the drift
        peer = None if args.no_peer else run_peer(
            "amici", "amici_kinetics.py",
            {"problems": [peer_spec(str(i), net, t)], "repeats": args.compiled_repeats})
        amici = (peer or {}).get(str(i))
        exact = reference_final(net, t)
        for method in args.methods:
            small = len(net.species) <= args.compiled_gradient_species
            comp = measure(net, t, method, True, args.compiled_repeats, with_gradient=small)
            eager = measure(net, t, method, False, args.repeats)
            row: list[object] = [label, method, comp["steps"], eager["sim"], comp["sim"],
                                 eager["grad"], comp["grad"], eager["sens"], comp["sens"],
                                 comp["first_s"]]
            row.append(relative_error(comp["final"], exact))
            if amici is not None and "tight_final" in amici:
                tight_rows.append([
                    label, method, row[-1], comp["sim"], comp["sens"],
                    relative_error(torch.tensor(amici["tight_final"]), exact),
                    amici["tight_steps"], amici["tight_sim_ms"], amici["tight_sens_ms"],
                    comp["sim"] / amici["tight_sim_ms"],
                    comp["sens"] / amici["tight_sens_ms"]])
            if amici is not None:
                row += [amici["steps"], amici["sim_ms"], amici["sens_ms"],
                        comp["sim"] / amici["sim_ms"], comp["sens"] / amici["sens_ms"],
                        relative_error(torch.tensor(amici["final"]), exact)]
            else:
                row += ["-"] * 6
            print(row, flush=True)
            rows.append(row)
    header = ["problem", "method", "steps", "simulation ms eager", "compiled",
              "ACA gradient ms eager", "compiled", "forward sensitivities ms eager",
              "compiled", "compile s", "final-state error", "AMICI steps",
              "AMICI simulation ms", "AMICI sensitivities ms", "ratio simulation",
              "ratio sensitivities", "AMICI final-state error"]
    text = (f"Stiff kinetics against AMICI (CVODES BDF), rtol 1e-8, atol 1e-10, float64 "
            f"({machine_line()})\n\n" + markdown_table(header, rows))
    if tight_rows:
        text += ("\n\nCloser to matched accuracy: AMICI at tolerances 100x tighter (rtol "
                 "1e-10, atol 1e-12) against physode at rtol 1e-8 (final-state errors of both "
                 "in units of rtol 1e-8 / atol 1e-10):\n\n"
                 + markdown_table(["problem", "method", "physode error", "simulation ms",
                                   "sensitivities ms", "AMICI error", "AMICI steps",
                                   "AMICI simulation ms", "AMICI sensitivities ms",
                                   "ratio simulation", "ratio sensitivities"], tight_rows))
    if args.fit:
        fit_rows = [r for m in args.methods for r in cascade_fit(m, args.repeats)]
        text += ("\n\nThe six-rate cascade fit (three experiments, LM):\n\n"
                 + markdown_table(["method", "mode", "iterations", "evaluations",
                                   "wall time s", "chi2", "worst error / stderr"], fit_rows))
    print(text)
    print(f"written to {write_result('stiff_kinetics', text)}")


if __name__ == "__main__":
    main()
