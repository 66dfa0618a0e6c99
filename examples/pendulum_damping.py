"""Length and damping of a pendulum from noisy angle-only data (datasets/pendulum_damped.h5)
=========================================================================================

    .venv/bin/python examples/pendulum_damping.py
"""

from __future__ import annotations

import physode
import systems


def main() -> None:
    system = systems.get("pendulum", length=1.3, damping=0.1)
    obs = physode.load_observations("datasets/pendulum_damped.h5", system=system)
    res = physode.fit(system, obs, optimizer="lm")
    print(res.report())
    for label, value, err in zip(res.labels, res.values, res.errors):
        truth = float(obs.parameters[label])
        print(f"{label}: {value:.5f} ± {err:.5f}  truth {truth}  "
              f"({abs(value - truth) / err:.2f} stderr away)")


if __name__ == "__main__":
    main()
