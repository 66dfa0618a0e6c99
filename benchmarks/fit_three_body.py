"""The seed paper's three-body mass fit: physode LM / L-BFGS against the seed authors'
recipe (Adam, lr 0.1, on the masses, with torchdiffeq), same data, same machine.

Data: datasets/three_body_paper.h5 (positions at 1000 times, noise-free, masses 1.1, 1.1,
0.9); start (1.0, 1.05, 0.95). Reports wall time (compilation included) and the largest
relative mass error. Writes benchmarks/results/fit_three_body.md.

    .venv/bin/python benchmarks/fit_three_body.py [--epochs 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchdiffeq
from common import machine_line, markdown_table, write_result

import physode
import systems

TRUTH = np.array([1.1, 1.1, 0.9])
START = [1.0, 1.05, 0.95]


def seed_recipe(epochs: int) -> tuple[float, float]:
    """Adam (lr 0.1) on the masses, loss = MSE of positions, torchdiffeq dopri5."""
    obs = physode.load_observations("datasets/three_body_paper.h5")
    system = systems.get("three-body-paper")
    t = torch.as_tensor(obs.experiments[0].t)
    target = torch.as_tensor(obs.experiments[0].values["position"]).reshape(len(t), -1)
    masses = torch.nn.Parameter(torch.tensor(START, dtype=torch.float64))
    system.fix("masses")
    opt = torch.optim.Adam([masses], lr=0.1)
    y0 = system.y0

    def field(tt, y):
        system._fixed._buffers["masses"] = masses
        return system(tt, y)

    start = time.perf_counter()
    for _ in range(epochs):
        opt.zero_grad()
        ys = torchdiffeq.odeint(field, y0, t, rtol=1e-7, atol=1e-8)
        loss = (ys[:, :9] - target).square().mean()
        loss.backward()
        opt.step()
    wall = time.perf_counter() - start
    return wall, float(np.max(np.abs(masses.detach().numpy() / TRUTH - 1)))


def ours(optimizer: str) -> tuple[float, float, int]:
    system = systems.get("three-body-paper", masses=START)
    start = time.perf_counter()
    res = physode.fit(system, "datasets/three_body_paper.h5", optimizer=optimizer,
                      progress=False)
    wall = time.perf_counter() - start
    return wall, float(np.max(np.abs(res.params["masses"] / TRUTH - 1))), res.niter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for opt in ("lm", "lbfgs"):
        wall, err, it = ours(opt)
        rows.append([f"physode fit, {opt} (compile=auto)", f"{wall:.1f}", f"{err:.1e}", it])
    wall, err = seed_recipe(args.epochs)
    rows.append(["seed recipe: Adam lr 0.1, torchdiffeq dopri5", f"{wall:.1f}", f"{err:.1e}",
                 args.epochs])
    text = (f"Seed paper's three-body mass fit from (1.0, 1.05, 0.95), noise-free data "
            f"({machine_line()})\n\n")
    text += markdown_table(["method", "wall s (incl. compile)", "max rel. mass error",
                            "iterations/epochs"], rows)
    print(text)
    write_result("fit_three_body", text)


if __name__ == "__main__":
    main()
