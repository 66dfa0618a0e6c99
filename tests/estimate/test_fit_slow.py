"""The issue's targets on the seed paper's three-body data (slow: `make test-slow`)."""

from __future__ import annotations

import numpy as np
import pytest

import physode
import systems

TRUTH = np.array([1.1, 1.1, 0.9])


def _fit(data):
    system = systems.get("three-body-paper", masses=[1.0, 1.05, 0.95])
    return physode.fit(system, f"datasets/{data}.h5", optimizer="lm", progress=False)


@pytest.mark.slow
def test_three_body_noise_free_masses_to_1e5():
    res = _fit("three_body_paper")
    assert np.all(np.abs(res.params["masses"] / TRUTH - 1) < 1e-5)


@pytest.mark.slow
def test_three_body_noisy_masses_within_3_stderr():
    res = _fit("three_body_paper_noisy")
    z = np.abs(res.params["masses"] - TRUTH) / res.stderr["masses"]
    assert np.all(z < 3), z


@pytest.mark.slow
def test_michaelis_menten_within_2_stderr():
    system = systems.get("michaelis-menten", kf=0.02, kr=0.05, kcat=0.2)
    res = physode.fit(system, "datasets/michaelis_menten.h5", optimizer="lm", progress=False)
    z = np.abs(res.values - [0.01, 0.1, 0.1]) / res.errors
    assert np.all(z < 2), z
