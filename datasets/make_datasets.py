"""Regenerate the shipped observation files of this directory, deterministically.

Usage (from the repository root)::

    .venv/bin/python datasets/make_datasets.py                 # every file
    .venv/bin/python datasets/make_datasets.py robertson       # one file (name without .h5)

Each file is simulated with :func:`physode.simulate` at tight tolerances (rtol 1e-10,
atol 1e-12) and a fixed noise seed, so rerunning gives the same numbers; the settings are
also recorded in each file's root attributes. Every dataset carries a checksum (Fletcher-32)
and no timestamps, so the bytes depend on the data only. The HDF5 schema is in ``README.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

import physode
import systems

HERE = Path(__file__).resolve().parent


def three_body_paper() -> physode.Observations:
    """Seed paper's three-body preset, positions at 1000 evenly spaced times on [0, 1]."""
    system = systems.get("three-body-paper")
    t = np.linspace(0.0, 1.0, 1000)
    return physode.simulate(system, t, observe=["position"], seed=0,
                            metadata={"description": "seed paper three-body problem, "
                                      "positions only, noise-free"})


def three_body_paper_noisy() -> physode.Observations:
    """As three_body_paper, plus Gaussian noise of standard deviation 1% of the position
    scale, the root-mean-square of the noise-free positions (absolute, not relative,
    noise: positions cross zero, where relative noise would vanish)."""
    clean = three_body_paper()
    positions = clean.experiments[0].values["position"]
    sigma = 0.01 * float(np.sqrt(np.mean(positions**2)))
    system = systems.get("three-body-paper")
    return physode.simulate(system, clean.experiments[0].t, observe=["position"], noise=sigma,
                            seed=1, metadata={
                                "description": "seed paper three-body problem, positions only, "
                                "noise sigma = 1% of the RMS of the noise-free positions",
                                "noise_fraction_of_rms_position": 0.01})


def pendulum_damped() -> physode.Observations:
    """Damped pendulum (b = 0.3 /s), theta(0) = 1 rad at rest, observed by its angle only
    at 201 times on [0, 10] s with 0.01 rad noise."""
    system = systems.get("pendulum", damping=0.3)
    t = np.linspace(0.0, 10.0, 201)
    return physode.simulate(system, t, observe=["theta"], noise=0.01, seed=2,
                            metadata={"description": "damped pendulum observed by angle only"})


def michaelis_menten() -> physode.Observations:
    """Michaelis-Menten mass-action kinetics, three experiments with initial substrate
    50, 25 and 10 (enzyme 10), substrate S and product P observed at 41 times on [0, 200]
    with noise 0.25."""
    system = systems.get("michaelis-menten")
    y0 = np.array([[s0, 10.0, 0.0, 0.0] for s0 in (50.0, 25.0, 10.0)])
    t = np.linspace(0.0, 200.0, 41)
    return physode.simulate(system, t, y0=y0, observe={"concentration": ["S", "P"]},
                            noise=0.25, seed=3,
                            metadata={"description": "Michaelis-Menten, S and P observed, "
                                      "three initial substrate concentrations"})


def robertson() -> physode.Observations:
    """Robertson's stiff kinetics from (1, 0, 0) at t = 0, all species observed at 101
    log-spaced times from 1e-5 to 1e5 with 1% relative noise (sigma = 0.01 |c|)."""
    system = systems.get("robertson")
    t = np.logspace(-5.0, 5.0, 101)
    return physode.simulate(system, t, t0=0.0, noise=0.01, relative_noise=True, seed=4,
                            method="rodas4",
                            metadata={"description": "Robertson kinetics, log-spaced times, "
                                      "1% relative noise"})


DATASETS: dict[str, Callable[[], physode.Observations]] = {
    "three_body_paper": three_body_paper,
    "three_body_paper_noisy": three_body_paper_noisy,
    "pendulum_damped": pendulum_damped,
    "michaelis_menten": michaelis_menten,
    "robertson": robertson,
}


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        print(f"unknown dataset(s) {unknown}; choose from {list(DATASETS)}", file=sys.stderr)
        return 2
    for name in names or list(DATASETS):
        path = HERE / f"{name}.h5"
        physode.save_observations(DATASETS[name](), path)
        physode.load_observations(path)  # the file validates
        print(f"{path.name}: {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
