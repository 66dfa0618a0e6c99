"""Rate constants of Michaelis-Menten kinetics from three experiments observing S and P
====================================================================================

    .venv/bin/python examples/michaelis_menten_rates.py
"""

from __future__ import annotations

import physode
import systems


def main() -> None:
    system = systems.get("michaelis-menten", kf=0.02, kr=0.05, kcat=0.2)
    obs = physode.load_observations("datasets/michaelis_menten.h5", system=system)
    res = physode.fit(system, obs, optimizer="lm", multistart=2)
    print(res.report())
    for label, value, err in zip(res.labels, res.values, res.errors):
        truth = float(obs.parameters[label])
        print(f"{label}: {value:.5g} ± {err:.2g}  truth {truth}  "
              f"({abs(value - truth) / err:.2f} stderr away)")
    res.plot("results/michaelis_menten_fit.png")


if __name__ == "__main__":
    main()
