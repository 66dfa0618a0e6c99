"""Boehm_JProteomeRes2014 from random starts: physode against pyPESTO + AMICI + fides.

The issue's speed target (datasets/petab/README.md): 100 starts drawn uniformly within the
PEtab bounds on the log10 scale; count the starts that reach the best known optimum
(negative log-likelihood <= 138.23) and the total time (load + code generation + fit).
pyPESTO + AMICI run in their own virtualenv (benchmarks/peers/requirements-amici.txt) as
a subprocess; their rows are left out when it cannot be installed.

    .venv/bin/python benchmarks/petab_boehm.py [--starts 100] [--rtol 1e-6] [--no-peer]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
YAML = HERE.parent / "datasets/petab/Boehm_JProteomeRes2014/Boehm_JProteomeRes2014.yaml"
THRESHOLD = 138.23


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-8)
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--eager", action="store_true",
                    help="eager solves (default: compiled loops, SolverOptions(compile=True))")
    args = ap.parse_args()
    os.environ.setdefault("PHYSODE_CACHE_DIR", tempfile.mkdtemp())  # a cold first load
    import physode.petab as petab

    # evaluations run on one torch thread (physode.petab.simulate.single_thread)
    t0 = time.perf_counter()
    problem = petab.load(YAML, options=petab.SolverOptions(rtol=args.rtol, atol=args.atol,
                                                           compile=not args.eager))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    petab.load(YAML)
    reload_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = problem.fit(multistart=args.starts, seed=args.seed, max_iter=args.max_iter)
    fit_s = time.perf_counter() - t0  # includes compiling the solve (first evaluation)
    nominal = problem.nllh()  # after the fit: its compilation is not counted twice
    finals = np.array([s["nllh"] for s in result.starts])
    per_start = [s["time"] for s in result.starts]
    print(json.dumps({"start_s": per_start, "nit": [s["nit"] for s in result.starts],
                      "nllh": finals.tolist()}))
    rows = [{"peer": "physode" + (" eager" if args.eager else " compiled"), "load_s": load_s,
             "reload_s": reload_s, "fit_s": fit_s,
             "total_s": load_s + fit_s, "nominal": nominal, "best": float(finals.min()),
             "reached": int((finals <= THRESHOLD).sum()), "starts": len(finals)}]
    if not args.no_peer:
        from peer_env import run_peer
        peer = run_peer("amici", "amici_petab.py", {"yaml": str(YAML), "starts": args.starts,
                                                      "seed": args.seed,
                                                      "threshold": THRESHOLD})
        if peer is not None:
            rows.append({"peer": "pyPESTO+AMICI+fides", "load_s": peer["compile_s"],
                         "reload_s": float("nan"), "fit_s": peer["fit_s"],
                         "total_s": peer["compile_s"] + peer["fit_s"],
                         "nominal": peer["nominal"], "best": peer["best"],
                         "reached": peer["reached"], "starts": peer["starts"]})
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
