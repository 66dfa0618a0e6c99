"""Fit the three masses of the seed paper's three-body problem (what `physode demo` runs)
======================================================================================

    .venv/bin/python examples/three_body_masses.py [noisy]
"""

from __future__ import annotations

import sys

import numpy as np

import physode
import systems


def main() -> None:
    name = "three_body_paper_noisy" if "noisy" in sys.argv[1:] else "three_body_paper"
    system = systems.get("three-body-paper", masses=[1.0, 1.05, 0.95])
    res = physode.fit(system, f"datasets/{name}.h5", optimizer="lm")
    print(res.report())
    truth = np.array([1.1, 1.1, 0.9])
    for i, (m, s, t) in enumerate(zip(res.params["masses"], res.stderr["masses"], truth)):
        print(f"mass {i}: {m:.8f} ± {s:.2e}  truth {t}  rel. error {abs(m / t - 1):.1e}")


if __name__ == "__main__":
    main()
