"""Boehm_JProteomeRes2014 from random starts: physode against pyPESTO + AMICI + fides.

The issue's speed target (datasets/petab/README.md): 100 starts drawn uniformly within the
PEtab bounds on the log10 scale; count the starts that reach the best known optimum
(negative log-likelihood <= 138.23) and the total time (load + code generation + fit).
pyPESTO + AMICI run in their own virtualenv (benchmarks/peers/requirements-amici.txt) as
a subprocess; their rows are left out when it cannot be installed.

    .venv/bin/python benchmarks/petab_boehm.py [--starts 100] [--rtol 1e-6] [--no-peer]

physode fits all starts together (``optimizer="auto"``: batched Levenberg–Marquardt on
forward sensitivities, :mod:`physode.petab.batch_fit`); ``--optimizer lbfgs`` runs the
per-start L-BFGS-B path instead.
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
    ap.add_argument("--optimizer", default="auto", help="auto (batched LM), lm or lbfgs")
    ap.add_argument("--compile", action="store_true",
                    help="compile physode's kernels (from a cold torch cache; counted)")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "petab_boehm.md")
    args = ap.parse_args()
    # a cold first load and a cold compilation: both count, as AMICI's import does
    os.environ.setdefault("PHYSODE_CACHE_DIR", tempfile.mkdtemp())
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp())
    import physode.petab as petab

    # evaluations run on one torch thread (physode.petab.simulate.single_thread)
    t0 = time.perf_counter()
    problem = petab.load(YAML, options=petab.SolverOptions(rtol=args.rtol, atol=args.atol))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    petab.load(YAML)
    reload_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = problem.fit(multistart=args.starts, seed=args.seed, max_iter=args.max_iter,
                         optimizer=args.optimizer, compile=args.compile)
    fit_s = time.perf_counter() - t0  # includes compiling the sensitivity kernels
    nominal = problem.nllh()
    finals = np.array([s["nllh"] for s in result.starts])
    print(json.dumps({"nit": [s["nit"] for s in result.starts], "nllh": finals.tolist()}))
    how = "compiled" if args.compile else "eager"
    rows = [{"peer": f"physode ({result.settings.optimizer}, {how})", "load_s": load_s,
             "reload_s": reload_s, "fit_s": fit_s, "total_s": load_s + fit_s,
             "nominal": nominal, "best": float(finals.min()),
             "reached": int((finals <= THRESHOLD).sum()), "starts": len(finals)}]
    if not args.no_peer:
        from peer_env import run_peer
        peer = run_peer("amici", "amici_petab.py", {"yaml": str(YAML), "starts": args.starts,
                                                      "seed": args.seed,
                                                      "threshold": THRESHOLD})
        if peer is not None:
            rows.append({"peer": "pyPESTO + AMICI + fides", "load_s": peer["compile_s"],
                         "reload_s": float("nan"), "fit_s": peer["fit_s"],
                         "total_s": peer["compile_s"] + peer["fit_s"],
                         "nominal": peer["nominal"], "best": peer["best"],
                         "reached": peer["reached"], "starts": peer["starts"]})
    for r in rows:
        print(json.dumps(r))
    write_table(rows, args)


def write_table(rows: list[dict], args: argparse.Namespace) -> None:
    """The markdown table README.md shows (benchmarks/update_readme.py copies it)."""
    lines = [f"Boehm_JProteomeRes2014, {args.starts} starts uniform within the PEtab bounds "
             f"(log10 scale), seed {args.seed}, rtol {args.rtol:g}, atol {args.atol:g}, "
             "one process on a 2-core machine; load = model import with code generation "
             "(AMICI: + C++ compilation; both from a cold cache); a compiled physode fit "
             "includes compiling its kernels from a cold torch cache. Reached: final nllh "
             f"<= {THRESHOLD}.", "",
             "| peer | load s | fit s | total s | reached | best nllh | nllh at nominal |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['peer']} | {r['load_s']:.1f} | {r['fit_s']:.1f} | "
                     f"{r['total_s']:.1f} | {r['reached']}/{r['starts']} | {r['best']:.4f} | "
                     f"{r['nominal']:.4f} |")
    if len(rows) == 2:
        lines += ["", f"Total time ratio physode / pyPESTO: "
                      f"{rows[0]['total_s'] / rows[1]['total_s']:.2f}; time per start "
                      f"that reached the optimum: "
                      f"{rows[0]['total_s'] / max(rows[0]['reached'], 1):.1f} s against "
                      f"{rows[1]['total_s'] / max(rows[1]['reached'], 1):.1f} s."]
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
