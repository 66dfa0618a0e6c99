"""Peer: pyPESTO + AMICI + fides on a PEtab problem, run in its own virtualenv.

Reads ``{"yaml": path, "starts": n, "seed": s, "threshold": x}`` on stdin and prints one
JSON object: import+compile time, fit time, nllh at the nominal point, the best nllh and
how many starts reached ``threshold``. Starts are drawn by pyPESTO uniformly within the
bounds on the parameter scale, as the benchmark draws its own.
"""

import json
import sys
import tempfile
import time

import numpy as np
import petab.v1 as petab
import pypesto
import pypesto.optimize
import pypesto.petab


def main() -> None:
    spec = json.loads(sys.stdin.read())
    problem = petab.Problem.from_yaml(spec["yaml"])
    t0 = time.perf_counter()
    importer = pypesto.petab.PetabImporter(problem, output_folder=tempfile.mkdtemp(),
                                           model_name="peer_" + str(int(time.time())))
    pproblem = importer.create_problem()
    compile_s = time.perf_counter() - t0
    # the nominal point: estimated parameters on their scales, in the table's order (as
    # pyPESTO orders its free parameters)
    nominal = float(pproblem.objective(np.asarray(problem.x_nominal_free_scaled)))
    t0 = time.perf_counter()
    np.random.seed(spec["seed"])
    result = pypesto.optimize.minimize(pproblem, optimizer=pypesto.optimize.FidesOptimizer(),
                                       n_starts=spec["starts"], progress_bar=False)
    fit_s = time.perf_counter() - t0
    fvals = np.array([r.fval for r in result.optimize_result.list])
    print(json.dumps({"compile_s": compile_s, "fit_s": fit_s, "nominal": nominal,
                      "best": float(np.nanmin(fvals)),
                      "reached": int(np.sum(fvals <= spec["threshold"])),
                      "starts": int(len(fvals))}))


if __name__ == "__main__":
    main()
