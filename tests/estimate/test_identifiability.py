"""Identifiability reports (issue 19, item 5): "at bound" instead of a fake standard error
or a "singular" verdict, and practically non-identifiable combinations flagged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import physode
from physode import Parameter, StateVar, System
from physode.estimate.identifiability import (
    CORRELATION_MAX,
    REL_STDERR_MAX,
    at_bound,
    practical,
)
from physode.estimate.uncertainty import gauss_newton

FAST = {"progress": False, "compile": False, "rtol": 1e-9, "atol": 1e-11}


def test_at_bound_two_sided_one_sided_and_saturated():
    bounds = [(0.0, 1.0), (0.0, 1.0), (0.0, math.inf), (0.0, math.inf), (-math.inf, math.inf)]
    values = np.array([1.0 - 1e-9, 0.5, 1e-12, 0.3, 1e-12])
    scales = np.array([0.5, 0.5, 1.0, 1.0, 1.0])
    dxdu = np.array([1e-9, 0.25, 1e-12, 0.3, 1.0])
    assert at_bound(values, bounds, scales, dxdu).tolist() == [True, False, True, False, False]
    dxdu[1] = 0.0  # the transform saturated in floating point
    assert at_bound(values, bounds, scales, dxdu)[1]


def test_gauss_newton_holds_a_parameter_at_its_bound():
    rng = np.random.default_rng(0)
    J = rng.standard_normal((50, 3))
    J[:, 2] *= 1e-7  # the bounding transform's derivative has almost vanished
    values = np.array([1.0, 2.0, 0.35 - 1e-9])
    bounds = [(-math.inf, math.inf), (0.0, math.inf), (0.0, 0.35)]
    unc = gauss_newton(J, ["a", "b", "c"], np.array([1.0, 2.0, 1e-7]), 50.0, 50, 3, False,
                       values=values, bounds=bounds)
    assert unc.at_bound == ["c"] and not unc.nonidentifiable
    assert np.isnan(unc.stderr[2]) and np.all(np.isfinite(unc.stderr[:2]))
    expected = np.linalg.inv(J[:, :2].T @ J[:, :2]) * np.outer([1.0, 2.0], [1.0, 2.0])
    np.testing.assert_allclose(unc.covariance[:2, :2], expected, rtol=1e-10)


def test_a_value_stopped_just_short_of_its_bound_is_at_bound():
    """L-BFGS in logistic coordinates stops at u ~ 10: 1.6e-5 from the bound (not within
    1e-6 of the interval), where a Gaussian standard error reaching across the bound means
    nothing."""
    rng = np.random.default_rng(1)
    Jx = rng.standard_normal((40, 2)) * 30.0  # physical stderr of c ~ 0.03 >> 1.6e-5
    u = 10.0
    s = 1 / (1 + math.exp(-u))
    dxdu = np.array([1.0, 0.35 * s * (1 - s)])
    values = np.array([1.0, 0.35 * s])
    unc = gauss_newton(Jx * dxdu, ["a", "c"], dxdu, 40.0, 40, 2, False, values=values,
                       bounds=[(-math.inf, math.inf), (0.0, 0.35)])
    assert unc.at_bound == ["c"] and np.isnan(unc.stderr[1])
    without = gauss_newton(Jx * dxdu, ["a", "c"], dxdu, 40.0, 40, 2, False)
    assert without.stderr[1] > 100 * (0.35 - values[1])  # a stderr across the bound
    inside = gauss_newton(Jx, ["a", "c"], np.ones(2), 40.0, 40, 2, False,
                          values=np.array([1.0, 0.2]), bounds=[(-math.inf, math.inf),
                                                                (0.0, 0.35)])
    assert not inside.at_bound and np.all(np.isfinite(inside.stderr))


def test_practical_flags_correlation_large_stderr_and_sloppy_combination():
    # kon, koff known only through their ratio: ln kon - ln koff well determined, the sum not
    values = np.array([10.0, 5.0, 1.0])
    v_sum = np.array([1.0, 1.0, 0.0]) / math.sqrt(2)
    v_diff = np.array([1.0, -1.0, 0.0]) / math.sqrt(2)
    cov_log = 25.0 * np.outer(v_sum, v_sum) + 1e-4 * np.outer(v_diff, v_diff)
    cov_log[2, 2] = 1e-4
    cov = cov_log * np.outer(values, values)
    stderr = np.sqrt(np.diag(cov))
    corr = cov / np.outer(stderr, stderr)
    found = practical(["kon", "koff", "k3"], values, cov, stderr, corr)
    assert [(a, b) for a, b, _ in found.correlated] == [("kon", "koff")]
    assert found.correlated[0][2] > CORRELATION_MAX
    assert {lab for lab, rel in found.large_stderr} == {"kon", "koff"}
    assert all(rel > REL_STDERR_MAX for _, rel in found.large_stderr)
    (comb,) = found.combinations
    assert set(comb.weights) == {"kon", "koff"} and comb.stderr == pytest.approx(5.0)
    assert comb.weights["kon"] == pytest.approx(comb.weights["koff"])
    assert "ln|kon|" in comb.text() and "k3" not in found.flagged
    assert any("combination" in line for line in found.lines())


def test_well_determined_parameters_are_not_flagged():
    values = np.array([1.0, 2.0])
    cov = np.diag([1e-4, 4e-4])
    stderr = np.sqrt(np.diag(cov))
    found = practical(["a", "b"], values, cov, stderr, cov / np.outer(stderr, stderr))
    assert not found.flagged and not found.lines()


class NearlyCollinear(System):
    """dy/dt = a + b (1 + t / 100), y(0) = 0: y = (a + b) t + b t^2 / 200. The data fix
    a + b well, b itself (and so a) hardly: a practically non-identifiable pair."""

    a = Parameter(0.8)
    b = Parameter(0.6)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 0.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": (self.a + self.b * (1 + t / 100)) * torch.ones_like(s["y"])}


def test_fit_reports_a_practically_non_identifiable_pair():
    obs = physode.simulate(NearlyCollinear(a=1.0, b=0.5), np.linspace(0, 1, 20), noise=0.01,
                           seed=3)
    res = physode.fit(NearlyCollinear(), obs, optimizer="lm", **FAST)
    unc = res.uncertainty
    assert res.success and not unc.nonidentifiable and not unc.at_bound
    assert np.all(np.isfinite(res.errors))  # a real (large) standard error, not NaN
    (pair,) = unc.practical.correlated
    assert pair[:2] == ("a", "b") and pair[2] < -CORRELATION_MAX
    assert {"a", "b"} == {lab for lab, _ in unc.practical.large_stderr}
    assert "practically non-identifiable" in res.report()
    assert float(res.params["a"] + res.params["b"]) == pytest.approx(1.5, abs=0.02)
