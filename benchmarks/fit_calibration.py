"""Stderr calibration: over 20 noisy replicates of a damped pendulum (angle only, sigma =
0.01 rad), compare the reported standard errors with the empirical spread of the estimates.
The issue's criterion: within a factor 2.

    .venv/bin/python benchmarks/fit_calibration.py [--replicates 20]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import markdown_table, write_result

import physode
import systems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicates", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    truth = systems.get("pendulum", damping=0.3)
    t = np.linspace(0, 5, 51)
    est, err = [], []
    for seed in range(args.replicates):
        obs = physode.simulate(truth, t, observe=["theta"], noise=0.01, seed=100 + seed)
        system = systems.get("pendulum", length=1.2, damping=0.1)
        res = physode.fit(system, obs, optimizer="lm", progress=False, compile=False,
                          rtol=1e-7, atol=1e-9)
        est.append(res.values)
        err.append(res.errors)
    est, err = np.array(est), np.array(err)
    spread = est.std(axis=0, ddof=1)
    reported = np.median(err, axis=0)
    rows = [[name, f"{spread[i]:.3g}", f"{reported[i]:.3g}", f"{reported[i] / spread[i]:.2f}"]
            for i, name in enumerate(["length", "damping"])]
    text = (f"Stderr calibration, damped pendulum, {args.replicates} replicates "
            "(LM, angle only, sigma 0.01 rad)\n\n")
    text += markdown_table(["parameter", "empirical std", "median reported stderr", "ratio"],
                           rows)
    print(text)
    write_result("fit_calibration", text)


if __name__ == "__main__":
    main()
