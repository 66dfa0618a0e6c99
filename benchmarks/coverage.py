"""Calibration and speed of profile-likelihood intervals and posterior sampling (issue 16).

Coverage: over noisy replicates of the damped pendulum (angle only, sigma 0.01 rad) and of
the seed paper's three-body problem (1% position noise), how often the 95% profile
interval (:func:`physode.profile`) and the Gauss-Newton interval (value +- 1.96 stderr)
contain the truth; the issue's target is 95 +- 4% for the profile intervals. Speed: the
time of the three masses' profiles against the time of the fit itself (target <= 10x), and
NUTS effective samples per second on the three-body posterior (target >= 50).

    .venv/bin/python benchmarks/coverage.py [pendulum] [three-body] [speed] [--replicates 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import arviz as az
import numpy as np
import torch
from common import machine_line, markdown_table, write_result

import physode
import systems
from physode.estimate.profiles import chi2_threshold


def coverage(name, make_obs, make_system, n, confidence=0.95):
    """Rows (problem, parameter, profile coverage, Gauss-Newton coverage, open profiles)."""
    z = float(np.sqrt(chi2_threshold(confidence)))
    hits_p = hits_g = opened = None
    labels = None
    for seed in range(n):
        print(f"{name}: replicate {seed + 1}/{n}", file=sys.stderr, flush=True)
        obs = make_obs(seed)
        res = physode.fit(make_system(), obs, optimizer="lm", progress=False)
        prof = physode.profile(res)
        labels = prof.labels
        truth = np.array([res.truth[lab] for lab in labels])
        if hits_p is None:
            hits_p, hits_g, opened = (np.zeros(len(labels), int) for _ in range(3))
        for j, lab in enumerate(labels):
            lo, hi = prof.interval(lab)
            if lo is None or hi is None:
                opened[j] += 1
            lo = -np.inf if lo is None else lo
            hi = np.inf if hi is None else hi
            hits_p[j] += lo <= truth[j] <= hi
            value, se = res.value[lab], prof.gn_stderr[lab]
            hits_g[j] += abs(value - truth[j]) <= z * se
    return [[name, lab, f"{100 * hits_p[j] / n:.0f}%", f"{100 * hits_g[j] / n:.0f}%",
             str(opened[j])] for j, lab in enumerate(labels)]


def nuts_rate(res, draws, executor):
    """(NUTS effective samples per second (min over the masses), 4 chains; what it cost:
    gradients per iteration, warm-up included, and seconds of the whole run per
    gradient)."""
    t0 = time.perf_counter()
    idata = physode.sample(res, method="nuts", draws=draws, chains=4, executor=executor)
    t_nuts = time.perf_counter() - t0
    ess = float(np.min(az.ess(idata)["masses"].values))
    n_grad = int(idata.posterior.attrs["n_gradients"])
    per_iteration = n_grad / (4 * (draws + draws // 2))  # sample()'s default warm-up
    print(f"NUTS ({executor or 'serial'}) {t_nuts:.1f} s, min ESS {ess:.0f}, {n_grad} "
          f"gradients", file=sys.stderr, flush=True)
    return ess / t_nuts, per_iteration, t_nuts / n_grad


def three_body_speed(obs, draws):
    """(fit s, profiles s, NUTS ESS/s serial, NUTS ESS/s with the chains on a process
    pool) on one noisy three-body replicate."""
    t0 = time.perf_counter()
    res = physode.fit(systems.get("three-body-paper", masses=[1.0, 1.05, 0.95]), obs,
                      optimizer="lm", progress=False)
    t_fit = time.perf_counter() - t0
    print(f"three-body fit {t_fit:.1f} s", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    prof = physode.profile(res, "masses")
    t_prof = time.perf_counter() - t0
    print(f"three-body profiles {t_prof:.1f} s: "
          + ", ".join(f"{lab} {prof.interval(lab)}" for lab in prof.labels),
          file=sys.stderr, flush=True)
    return t_fit, t_prof, nuts_rate(res, draws, None), nuts_rate(res, draws, "processes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=["pendulum", "three-body", "speed"],
                        choices=["pendulum", "three-body", "speed"],
                        help="what to run (default: all); each writes its own result")
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--draws", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.replicates
    head = (f"Coverage of 95% intervals over {n} noisy replicates (LM fits, profiles with "
            f"compile='auto'; {machine_line()}). The issue's target: profile intervals "
            "cover the truth in 95 +- 4%.\n\n")
    columns = ["problem", "parameter", "profile coverage", "Gauss-Newton coverage",
               "open profiles"]
    if "pendulum" in args.parts:
        pendulum = systems.get("pendulum", damping=0.3)
        t = np.linspace(0, 5, 51)
        rows = coverage(
            "damped pendulum, angle only, sigma 0.01 rad",
            lambda s: physode.simulate(pendulum, t, observe=["theta"], noise=0.01,
                                       seed=100 + s),
            lambda: systems.get("pendulum", length=1.2, damping=0.1), n)
        out = head + markdown_table(columns, rows)
        print(out)
        write_result("coverage_pendulum", out)
    body = systems.get("three-body-paper")
    clean = physode.simulate(body, np.linspace(0, 1, 1000), observe=["position"])
    sigma = 0.01 * float(np.sqrt(np.mean(clean.experiments[0].values["position"] ** 2)))

    def make(s):
        return physode.simulate(body, clean.experiments[0].t, observe=["position"],
                                noise=sigma, seed=200 + s)

    if "three-body" in args.parts:
        rows = coverage("seed paper's three-body, 1% position noise", make,
                        lambda: systems.get("three-body-paper", masses=[1.0, 1.05, 0.95]), n)
        out = head + markdown_table(columns, rows)
        print(out)
        write_result("coverage_three_body", out)
    if "speed" in args.parts:
        t_fit, t_prof, (ess_s, per_it, per_grad), (ess_p, _, _) = three_body_speed(
            make(0), args.draws)
        out = markdown_table(
            ["seed paper's three-body, one replicate", "measured", "target"],
            [["fit (LM, compile='auto'; includes compiling)", f"{t_fit:.1f} s", ""],
             ["profiles of the three masses", f"{t_prof:.1f} s ({t_prof / t_fit:.2f}x the fit)",
              "<= 10x the fit"],
             [f"NUTS, 4 chains x {args.draws} draws, one after another",
              f"{ess_s:.1f} effective samples / s (min over the masses)", ">= 50"],
             [f"NUTS, 4 chains x {args.draws} draws, executor='processes' "
              f"({os.cpu_count()} cores)", f"{ess_p:.1f} effective samples / s", ">= 50"],
             ["NUTS cost (serial run): gradients per iteration, warm-up included; "
              "wall time per gradient (solver, Pyro and Python)",
              f"{per_it:.1f}; {per_grad * 1e3:.1f} ms", ""]])
        out = f"Uncertainty speed ({machine_line()}).\n\n" + out
        print(out)
        write_result("uncertainty_speed", out)


if __name__ == "__main__":
    main()
