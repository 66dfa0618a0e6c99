"""Scaling: per-task overhead of each engine, multistart on 1 vs 2 workers, and a
data-parallel fit on 1 vs 2 torchrun ranks.

    python benchmarks/scaling.py overhead              # serial / process pool / Dask
    python benchmarks/scaling.py multistart [--starts 100] [--problem boehm|pendulum]
    python benchmarks/scaling.py dataparallel [--experiments 1000]

``multistart`` fits the PEtab Boehm_JProteomeRes2014 problem (datasets/petab; rtol 1e-6)
from 100 starts with batched least squares in one chunk of starts per worker: the two
chunks one after the other in this process (1 worker), and on a 2-worker Dask
LocalCluster (whose workers reload the problem from the code cache; counted), and checks
that every start's result is identical; it also times the default serial fit (all starts
in one batch). ``--problem pendulum`` runs a pendulum multistart (per-start LM) instead.
``dataparallel`` fits N synthetic pendulums (different release angles and observation
times, shared length and damping) with LM on 1 and 2 gloo ranks (torchrun) and reports
the speed-up of the whole command (start-up, reading, fit, writing the labelled output on
rank 0) and of the fit itself (its ``wall_time_s``), and the largest relative difference
of the estimates. Medians of wall time;
the machines here have 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def noop(x: int) -> int:
    return x


def overhead(n: int = 200) -> dict[str, float]:
    """Seconds per trivial task through map_tasks on each engine (warm workers)."""
    import distributed

    from physode.estimate.executor import map_tasks, process_pool

    out: dict[str, float] = {}
    t0 = time.perf_counter()
    map_tasks(noop, range(n), None)
    out["serial"] = (time.perf_counter() - t0) / n
    with process_pool(2) as pool:
        map_tasks(noop, range(4), pool)  # start the workers
        t0 = time.perf_counter()
        map_tasks(noop, range(n), pool)
        out["processes (2 workers)"] = (time.perf_counter() - t0) / n
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        ex = client.get_executor()
        map_tasks(noop, range(4), ex)
        t0 = time.perf_counter()
        map_tasks(noop, range(n), ex)
        out["dask LocalCluster (2 workers)"] = (time.perf_counter() - t0) / n
    return out


def _pendulum_problem(n_exp: int, seed: int = 0):
    import physode
    import systems

    truth = systems.get("pendulum", length=1.2, damping=0.15)
    rng = np.random.default_rng(seed)
    exps = []
    one = None
    for k in range(n_exp):
        t = np.linspace(0.0, 1.0 + rng.uniform(0, 1), 10)
        one = physode.simulate(truth, t, y0=[rng.uniform(0.2, 1.5), 0.0], noise=0.01,
                               seed=k, experiment_names=[f"p{k}"], rtol=1e-8, atol=1e-10)
        exps += one.experiments
    assert one is not None
    return replace(one, experiments=exps)


def multistart_boehm(starts: int) -> dict[str, float]:
    import distributed

    import physode.petab as petab

    yaml = Path(__file__).resolve().parent.parent / (
        "datasets/petab/Boehm_JProteomeRes2014/Boehm_JProteomeRes2014.yaml")
    problem = petab.load(yaml, options=petab.SolverOptions(rtol=1e-6, atol=1e-8))
    per_task = -(-starts // 2)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    ref = problem.fit(multistart=starts, seed=0, starts_per_task=per_task)
    out["serial_chunked_s"] = time.perf_counter() - t0
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        t0 = time.perf_counter()
        res = problem.fit(multistart=starts, seed=0, executor=client.get_executor())
        out["dask_s"] = time.perf_counter() - t0
    out["dask_identical"] = float([s["x"] for s in res.starts]
                                  == [s["x"] for s in ref.starts])
    t0 = time.perf_counter()
    one = problem.fit(multistart=starts, seed=0)
    out["serial_one_batch_s"] = time.perf_counter() - t0
    out["speedup_dask_vs_serial_chunked"] = out["serial_chunked_s"] / out["dask_s"]
    out["speedup_dask_vs_one_batch"] = out["serial_one_batch_s"] / out["dask_s"]
    out["best_nllh"] = float(min(s["nllh"] for s in res.starts))
    out["reached_dask"] = float(sum(s["nllh"] <= 138.23 for s in res.starts))
    out["reached_one_batch"] = float(sum(s["nllh"] <= 138.23 for s in one.starts))
    return out


def multistart(starts: int) -> dict[str, float]:
    import distributed

    import physode
    import systems

    obs = _pendulum_problem(20)
    kw = dict(optimizer="lm", multistart=starts - 1, rtol=1e-6, atol=1e-8, compile=False,
              progress=False)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    ref = physode.fit(systems.get("pendulum"), obs, **kw)
    out["serial_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = physode.fit(systems.get("pendulum"), obs, executor="processes", **kw)
    out["processes_s"] = time.perf_counter() - t0
    out["processes_identical"] = float(np.array_equal(res.values, ref.values))
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        t0 = time.perf_counter()
        res = physode.fit(systems.get("pendulum"), obs, executor=client.get_executor(), **kw)
        out["dask_s"] = time.perf_counter() - t0
    out["dask_identical"] = float(np.array_equal(res.values, ref.values))
    out["speedup_processes"] = out["serial_s"] / out["processes_s"]
    out["speedup_dask"] = out["serial_s"] / out["dask_s"]
    return out


def dataparallel(n_exp: int) -> dict[str, float]:
    import physode

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pendulums.h5"
        physode.save_observations(_pendulum_problem(n_exp), data)
        times: dict[int, float] = {}
        fit_s: dict[int, float] = {}
        values: dict[int, np.ndarray] = {}
        for k in (1, 2):
            out = Path(tmp) / f"fit{k}.nc"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={k}", "-m", "physode", "fit", "pendulum", str(data),
                   "--out", str(out), "--optimizer", "lm", "--rtol", "1e-6", "--atol",
                   "1e-8", "--compile", "off", "--no-progress"]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
            times[k] = time.perf_counter() - t0
            ds = physode.read_netcdf(out)
            values[k] = ds["estimate"].values
            fit_s[k] = float(ds.attrs["wall_time_s"])  # the fit itself, on rank 0
            out.unlink()  # the labelled output of 1000 experiments is large
    diff = float(np.max(np.abs(values[2] - values[1]) / np.abs(values[1])))
    return {"rank1_s": times[1], "rank2_s": times[2], "speedup": times[1] / times[2],
            "fit_rank1_s": fit_s[1], "fit_rank2_s": fit_s[2],
            "fit_speedup": fit_s[1] / fit_s[2], "max_rel_diff": diff}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("overhead", "multistart", "dataparallel"))
    p.add_argument("--starts", type=int, default=100)
    p.add_argument("--problem", choices=("boehm", "pendulum"), default="boehm")
    p.add_argument("--experiments", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.what == "overhead":
        runs = [overhead() for _ in range(args.repeats)]
        result = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    elif args.what == "multistart":
        result = (multistart_boehm(args.starts) if args.problem == "boehm"
                  else multistart(args.starts))
    else:
        result = dataparallel(args.experiments)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
