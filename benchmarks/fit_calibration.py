"""Stderr calibration: over 20 noisy replicates of a damped pendulum (angle only, sigma =
0.01 rad) and of the seed paper's three-body setup (1% position noise), compare the
reported standard errors with the empirical spread of the estimates. The issue's
criterion: within a factor 2.

    .venv/bin/python benchmarks/fit_calibration.py [--replicates 20] [--skip-three-body]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import markdown_table, write_result

import physode
import systems


def calibrate(name: str, make_obs, make_system, labels: list[str], n: int) -> list[list]:
    """Fit ``n`` noisy replicates; return rows (parameter, empirical std, median reported
    stderr, ratio, how many estimates within 3 stderr of the truth)."""
    est, err = [], []
    truth = None
    for seed in range(n):
        obs = make_obs(seed)
        res = physode.fit(make_system(), obs, optimizer="lm", progress=False)
        est.append(res.values)
        err.append(res.errors)
        truth = np.concatenate([np.ravel(obs.parameters[k]) for k in labels])
    est, err = np.array(est), np.array(err)
    spread = est.std(axis=0, ddof=1)
    reported = np.median(err, axis=0)
    within = (np.abs(est - truth) <= 3 * err).sum(axis=0)
    names = [f"{k}[{i}]" if len(truth) > len(labels) else k
             for k in labels for i in range(len(truth) // len(labels))]
    return [[name, names[i], f"{spread[i]:.3g}", f"{reported[i]:.3g}",
             f"{reported[i] / spread[i]:.2f}", f"{within[i]}/{n}"] for i in range(len(truth))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicates", type=int, default=20)
    parser.add_argument("--skip-three-body", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.replicates

    pendulum_truth = systems.get("pendulum", damping=0.3)
    t = np.linspace(0, 5, 51)
    rows = calibrate(
        "damped pendulum (angle only, sigma 0.01 rad)",
        lambda seed: physode.simulate(pendulum_truth, t, observe=["theta"], noise=0.01,
                                      seed=100 + seed),
        lambda: systems.get("pendulum", length=1.2, damping=0.1), ["length", "damping"], n)
    rows = [["damped pendulum, angle only, sigma 0.01 rad", *r[1:]] for r in rows]
    if not args.skip_three_body:
        body = systems.get("three-body-paper")
        clean = physode.simulate(body, np.linspace(0, 1, 1000), observe=["position"])
        sigma = 0.01 * float(np.sqrt(np.mean(clean.experiments[0].values["position"] ** 2)))
        tb = calibrate(
            "three-body-paper",
            lambda seed: physode.simulate(body, clean.experiments[0].t, observe=["position"],
                                          noise=sigma, seed=200 + seed),
            lambda: systems.get("three-body-paper", masses=[1.0, 1.05, 0.95]), ["masses"], n)
        rows += [["seed paper's three-body, 1% position noise", *r[1:]] for r in tb]
    text = (f"Stderr calibration over {n} noisy replicates per problem (LM). The issue's "
            "criterion: reported stderr within a factor 2 of the empirical spread.\n\n")
    text += markdown_table(["problem", "parameter", "empirical std", "median reported stderr",
                            "ratio", "within 3 stderr of truth"], rows)
    print(text)
    write_result("fit_calibration", text)


if __name__ == "__main__":
    main()
