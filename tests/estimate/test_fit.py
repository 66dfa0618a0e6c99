"""physode.fit on small problems: estimates, covariance, identifiability, robustness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import physode
from physode import Parameter, StateVar, System
from physode.errors import NonFiniteState
from physode.estimate.problem import FitProblem

FAST = {"progress": False, "compile": False, "rtol": 1e-9, "atol": 1e-11}


class Ramp(System):
    """dy/dt = a + b t, y(0) = 0: y = a t + b t^2 / 2 is linear in (a, b)."""

    a = Parameter(0.5)
    b = Parameter(-0.2)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 0.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": (self.a + self.b * t) * torch.ones_like(s["y"])}


class Decay(System):
    """dy/dt = -k1 k2 y: only the product k1 k2 is identifiable."""

    k1 = Parameter(1.0, positive=True)
    k2 = Parameter(1.0, positive=True)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 1.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": -self.k1 * self.k2 * s["y"]}


def ramp_data(sigma=0.1, seed=0, n=30):
    t = np.linspace(0.0, 2.0, n)
    truth = Ramp(a=1.0, b=0.7)
    obs = physode.simulate(truth, t, noise=sigma, seed=seed)
    return t, obs


@pytest.mark.parametrize("optimizer", ["lm", "lbfgs"])
def test_linear_problem_matches_ols(optimizer):
    t, obs = ramp_data()
    res = physode.fit(Ramp(), obs, optimizer=optimizer, **FAST)
    X = np.stack([t, t**2 / 2], axis=1)
    yv = obs.experiments[0].values["y"]
    beta, *_ = np.linalg.lstsq(X, yv, rcond=None)
    cov = 0.1**2 * np.linalg.inv(X.T @ X)
    np.testing.assert_allclose(res.values, beta, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(res.covariance, cov, rtol=1e-5)
    np.testing.assert_allclose(res.errors, np.sqrt(np.diag(cov)), rtol=1e-5)
    assert not res.sigma_estimated and res.success and not res.nonidentifiable
    assert res.chi2 == pytest.approx(float(np.sum((X @ beta - yv) ** 2)) / 0.01, rel=1e-6)


def test_estimated_sigma_scales_covariance():
    t, obs = ramp_data(sigma=0.05, seed=3, n=200)
    obs.experiments[0].sigma.clear()
    res = physode.fit(Ramp(), obs, optimizer="lm", **FAST)
    assert res.sigma_estimated
    assert res.noise_sigma == pytest.approx(0.05, rel=0.15)
    X = np.stack([t, t**2 / 2], axis=1)
    np.testing.assert_allclose(res.covariance, res.redchi * np.linalg.inv(X.T @ X), rtol=1e-5)


def test_nonidentifiable_parameters_are_named():
    obs = physode.simulate(Decay(k1=2.0, k2=1.5), np.linspace(0, 2, 20), noise=0.01, seed=1)
    res = physode.fit(Decay(), obs, optimizer="lm", **FAST)
    assert set(res.nonidentifiable) == {"k1", "k2"}
    assert np.all(np.isnan(res.errors))
    assert "not identifiable" in res.report()
    assert float(res.params["k1"] * res.params["k2"]) == pytest.approx(3.0, rel=0.02)


def test_keyboard_interrupt_keeps_best():
    _, obs = ramp_data()
    first = {}

    def stop(info):
        first.setdefault("chi2", info["chi2"])
        if info["iteration"] == 2:
            raise KeyboardInterrupt

    res = physode.fit(Ramp(a=3.0, b=-2.0), obs, optimizer="lbfgs", callback=stop, **FAST)
    assert res.interrupted and not res.success
    assert "interrupted" in res.stop_reason
    assert res.chi2 <= first["chi2"]
    assert res.niter == 2


@pytest.mark.parametrize("optimizer", ["lbfgs", "lm", "adam"])
def test_solver_failure_in_line_search_does_not_crash(monkeypatch, optimizer):
    _, obs = ramp_data()
    calls = {"n": 0}
    name = "residuals_and_jacobian" if optimizer == "lm" else "loss_and_grad"
    original = getattr(FitProblem, name)

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] in (3, 4):  # trial points (the start point solved before)
            raise NonFiniteState(0.5)
        return original(self, *a, **kw)

    monkeypatch.setattr(FitProblem, name, flaky)
    kw = {"max_iter": 300, "lr": 0.1} if optimizer == "adam" else {}
    res = physode.fit(Ramp(a=0.2, b=0.1), obs, optimizer=optimizer, **FAST, **kw)
    assert calls["n"] > 4
    assert np.all(np.isfinite(res.values))
    if optimizer != "adam":
        assert res.values == pytest.approx([1.0, 0.7], abs=0.15)


def test_multistart_reports_every_start_and_keeps_best():
    obs = physode.simulate(Decay(k1=2.0, k2=1.0), np.linspace(0, 2, 20), noise=0.01, seed=1)
    system = Decay(k2=Parameter(1.0, fixed=True), k1=Parameter(0.5, positive=True,
                                                                bounds=(0.1, 10.0)))
    res = physode.fit(system, obs, optimizer="lbfgs", multistart=3, seed=4, **FAST)
    assert len(res.starts) == 4
    assert res.chi2 == pytest.approx(min(s["chi2"] for s in res.starts))
    assert len({round(s["initial"]["k1"], 6) for s in res.starts}) == 4
    assert all(0.1 < s["initial"]["k1"] < 10.0 for s in res.starts)
    assert res.params["k1"] == pytest.approx(2.0, rel=0.01)
    assert "[[Starts]]" in res.report()


def test_unknown_initial_states_per_experiment_masks():
    truth = Decay(k1=1.3, k2=Parameter(1.0, fixed=True))
    t = np.linspace(0, 2, 15)
    obs = physode.simulate(truth, t, y0=[[1.0], [2.5]], noise=0.01, seed=2)
    obs.experiments[0].mask["y"] = np.zeros(15, dtype=bool)
    obs.experiments[0].mask["y"][[3, 7]] = True
    obs.experiments[0].values["y"][[3, 7]] = np.nan
    system = Decay(k2=Parameter(1.0, fixed=True))
    system.set_initial_state({"y": 1.5}, unknown=True)
    res = physode.fit(system, obs, optimizer="lm", **FAST)
    assert res.labels == ["k1", "y0.y[0]", "y0.y[1]"]
    assert res.n_data == 28
    np.testing.assert_allclose(res.values, [1.3, 1.0, 2.5], rtol=0.03)
    assert np.all(np.abs(res.values - [1.3, 1.0, 2.5]) < 3 * res.errors)


def test_adam_decreases_chi2():
    _, obs = ramp_data()
    res = physode.fit(Ramp(a=0.0, b=0.0), obs, optimizer="adam", max_iter=60, lr=0.1, **FAST)
    assert res.history[-1] < 0.1 * res.history[0]


def test_pendulum_partial_observation_within_two_stderr():
    """Damped pendulum observed by angle only (a short, sparser copy of the shipped data)."""
    truth = physode.load_observations("datasets/pendulum_damped.h5")
    exp = truth.experiments[0]
    keep = slice(0, 81, 2)  # t in [0, 4], 41 points
    exp.t, exp.values["theta"] = exp.t[keep], exp.values["theta"][keep]
    import systems

    system = systems.get("pendulum", length=1.3, damping=0.1)
    res = physode.fit(system, truth, optimizer="lm", progress=False, compile=False,
                      rtol=1e-7, atol=1e-9)
    z = np.abs(res.values - [1.0, 0.3]) / res.errors
    assert np.all(z < 2), (res.values, res.errors)


def test_report_contents():
    _, obs = ramp_data()
    res = physode.fit(Ramp(), obs, optimizer="lm", **FAST)
    text = res.report()
    for needle in ["[[Fit Statistics]]", "[[Variables]]", "chi-square", "reduced chi-square",
                   "Akaike info crit", "Bayesian info crit", "function evals",
                   "gradient evals", "iterations", "wall time", "stop reason", "stderr",
                   "rel. %", "initial", "bounds", "units", "truth"]:
        assert needle in text, needle
    assert "a " in text and "b " in text
    n, p = res.n_data, 2
    assert res.aic == pytest.approx(n * np.log(res.chi2 / n) + 2 * p)
    assert res.bic == pytest.approx(n * np.log(res.chi2 / n) + np.log(n) * p)


def test_invalid_arguments():
    _, obs = ramp_data()
    with pytest.raises(physode.InvalidArgument):
        physode.fit(Ramp(), obs, optimizer="newton", **FAST)
    with pytest.raises(physode.InvalidArgument):
        physode.fit(Ramp(a=Parameter(1.0, fixed=True), b=Parameter(1.0, fixed=True)), obs,
                    **FAST)
