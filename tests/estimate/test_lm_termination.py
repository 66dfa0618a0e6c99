"""Levenberg-Marquardt stops when chi2 stops changing and says why (issue 18, item 5);
only accepted steps are iterations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import physode
from physode import Parameter, StateVar, System
from physode.estimate.optimizers import _Settled, _StopTest


class Decay(System):
    """dy/dt = -k y + b."""

    k = Parameter(0.7, positive=True)
    b = Parameter(0.2)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 1.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": -self.k * s["y"] + self.b}


class _Problem:
    class solver:  # noqa: N801 - stands in for SolverSettings
        rtol = 1e-6


def test_stop_test_floors_ftol_at_the_solver_rtol_and_checks_steps():
    test = _StopTest(_Problem(), ftol=1e-12, xtol=1e-8, max_iter=50)
    assert test.ftol == 1e-6
    test.accepted(np.array([1.0, 2.0]), 100.0, 0)
    test.accepted(np.array([1.1, 2.0]), 90.0, 1)  # 10 % change: go on
    with pytest.raises(_Settled, match="chi2 stopped changing"):
        test.accepted(np.array([1.2, 2.0]), 90.0 * (1 - 5e-7), 2)
    test = _StopTest(_Problem(), ftol=1e-12, xtol=1e-8, max_iter=50)
    test.accepted(np.array([1.0, 2.0]), 100.0, 0)
    with pytest.raises(_Settled, match="parameters stopped changing"):
        test.accepted(np.array([1.0, 2.0 + 1e-9]), 50.0, 1)
    with pytest.raises(_Settled, match="max_iter"):
        _StopTest(_Problem(), 1e-12, 1e-12, 3).accepted(np.zeros(2), 1.0, 3)


def test_lm_fit_stops_on_a_settled_chi2_and_counts_accepted_steps_only():
    truth = Decay(k=1.3, b=0.5)
    t = torch.linspace(0.0, 4.0, 30)
    obs = physode.simulate(truth, t, noise=0.01, seed=3)
    res = physode.fit(Decay(), obs, optimizer="lm", progress=False, compile=False,
                      rtol=1e-8, atol=1e-10, max_iter=200)
    assert res.success
    conv = res.convergence
    assert conv.niter < 30  # a two-parameter fit settles in a handful of steps
    assert "stopped changing" in conv.stop_reason or "gtol" in conv.stop_reason
    history = conv.history
    # every reported iteration is an accepted step: chi2 never goes up along the history
    assert all(b <= a * (1 + 1e-12) for a, b in zip(history, history[1:]))
    assert conv.nfev >= len(history)
    # stopped at the estimate, not before it: within a few standard errors of the truth
    assert np.all(np.abs(np.asarray(res.values) - [1.3, 0.5]) < 4 * np.asarray(res.errors))
