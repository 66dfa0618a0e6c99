"""``physode petab inspect|fit|export PROBLEM.yaml``: PEtab problems from the command line.

``inspect`` prints what the problem holds (model size, conditions, observables, estimated
parameters with scales and bounds) and the negative log-likelihood at the nominal point;
``fit`` runs a multistart fit and saves the result (netCDF, atomically); ``export`` writes
the measurements as a physode observations file (our HDF5 schema).
"""

from __future__ import annotations

import argparse

from physode.cli.base import EXIT_NOT_CONVERGED, EXIT_OK, command
from physode.data.hdf5 import save_observations
from physode.petab import SolverOptions, load


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("inspect", "fit", "export"), help="what to do")
    p.add_argument("problem", help="the PEtab problem's YAML file")
    p.add_argument("--multistart", type=int, default=10, help="number of random starts (fit)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random starts (fit)")
    p.add_argument("--max-iter", type=int, default=500, help="iterations per start (fit)")
    p.add_argument("--rtol", type=float, default=1e-8, help="solver relative tolerance")
    p.add_argument("--atol", type=float, default=1e-10, help="solver absolute tolerance")
    p.add_argument("--out", help="output file: fit.nc (fit) or problem.h5 (export)")


@command("petab", "inspect, fit or export a PEtab problem (SBML model + tables)", _configure)
def run(args: argparse.Namespace) -> int:
    problem = load(args.problem, options=SolverOptions(rtol=args.rtol, atol=args.atol))
    if args.action == "inspect":
        print(problem)
        print(f"model {problem.model.id}: states {', '.join(problem.model.states)}")
        print(f"observables: {', '.join(problem.model.observables)}")
        conds = sorted({s.condition for s in problem.objective.simulations})
        print(f"simulation conditions: {', '.join(conds)}")
        lower, upper = problem.bounds
        print("estimated parameters (scale, bounds on that scale, nominal):")
        for pid, sc, lo, hi in zip(problem.free_ids, problem.objective.free_scales, lower,
                                   upper):
            print(f"  {pid:30s} {sc:6s} [{lo:.4g}, {hi:.4g}]  {problem.nominal[pid]:.6g}")
        print(f"negative log-likelihood at the nominal point: {problem.nllh():.6f}")
        return EXIT_OK
    if args.action == "export":
        out = args.out or "problem.h5"
        save_observations(problem.observations, out, system=problem.system)
        print(f"wrote {out} (read it with physode.load_observations(path, "
              "system=physode.petab.load(yaml).system))")
        return EXIT_OK
    result = problem.fit(multistart=args.multistart, seed=args.seed, max_iter=args.max_iter)
    best = sorted(s["nllh"] for s in result.starts)
    print(f"best negative log-likelihood {best[0]:.6f} ({len(best)} starts; "
          f"{result.wall_time:.1f} s)")
    for pid, v in result.params.items():
        print(f"  {pid:30s} {float(v):.6g}")
    if args.out:
        result.save(args.out)
        print(f"wrote {args.out}")
    return EXIT_OK if result.success else EXIT_NOT_CONVERGED
