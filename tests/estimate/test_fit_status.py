"""Honest status and failures of physode.fit (issue 12, items 9, 10, 11 and 15)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import physode
from physode import Experiment, Observations, Parameter, StateVar, System
from physode.errors import InvalidArgument

FAST = {"progress": False, "compile": False, "rtol": 1e-8, "atol": 1e-10}
#: a blow-up is found within a few hundred steps
SHORT = {**FAST, "options": {"max_steps": 100}}


class Blowup(System):
    """dy/dt = k y^2, y(0) = 1: y = 1 / (1 - k t) blows up at t = 1/k."""

    k = Parameter(0.5, positive=True)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 1.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": self.k * s["y"] ** 2}


class Relax(System):
    """dy/dt = -k (y - cos t): stiff for large k."""

    k = Parameter(1.0, positive=True)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 1.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": -self.k * (s["y"] - torch.cos(t))}


class Swing(System):
    """A pendulum: it does not move at all when its length is astronomically large."""

    length = Parameter(1.0, positive=True)
    state_vars = (StateVar("theta"), StateVar("omega"))

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"theta": 0.5, "omega": 0.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"theta": s["omega"], "omega": -9.81 / self.length * torch.sin(s["theta"])}


class Decay(System):
    k = Parameter(1.0, positive=True)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 1.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": -self.k * s["y"]}


@pytest.fixture(scope="module")
def blowup_obs():
    return physode.simulate(Blowup(k=0.5), np.linspace(0, 1, 11), noise=0.01, seed=0)


# ------------------------------------------------------------------ item 9
@pytest.mark.parametrize("optimizer", ["lbfgs", "lm", "adam"])
def test_blowup_start_saves_what_there_is(blowup_obs, optimizer, tmp_path):
    res = physode.fit(Blowup(k=5.0), blowup_obs, optimizer=optimizer, **SHORT)
    assert not res.success and res.status == "failed"
    assert "cannot be solved at the initial point" in res.stop_reason
    assert "k=5" in res.stop_reason
    assert res.failure and "experiment 'exp0'" in res.failure
    text = res.report()
    assert res.failure in text
    out = tmp_path / "fit.nc"
    res.save(out)
    back = physode.read_netcdf(out)
    assert back.attrs["success"] == 0 and back.attrs["status"] == "failed"
    assert back.attrs["failure"] == res.failure
    assert np.all(np.isnan(back["y_fitted"].values))
    np.testing.assert_allclose(back["estimate"].values, [5.0])
    res.plot(tmp_path / "fit.png")
    assert (tmp_path / "fit.png").exists()


def test_far_away_t0_saves_the_failure(tmp_path):
    t = np.linspace(0.0, 1.0, 6)
    exp = Experiment(t=t, values={"y": np.exp(-t)}, t0=-1e300)
    obs = Observations(system="test:Decay", experiments=[exp])
    res = physode.fit(Decay(), obs, optimizer="lm", options={"max_steps": 200}, **FAST)
    assert not res.success and res.failure
    res.save(tmp_path / "fit.nc")
    assert physode.read_netcdf(tmp_path / "fit.nc").attrs["failure"] == res.failure


def test_stiffness_hint_reaches_the_report_and_the_file(tmp_path):
    t = np.linspace(0.0, 1.0, 6)
    obs = Observations(system="test:Relax",
                       experiments=[Experiment(t=t, values={"y": np.cos(t)})])
    res = physode.fit(Relax(k=1e6), obs, optimizer="lm", options={"max_steps": 40}, **FAST)
    assert res.status == "failed"
    assert "stiff" in res.failure
    assert "stiff" in res.report()
    res.save(tmp_path / "fit.nc")
    assert "stiff" in physode.read_netcdf(tmp_path / "fit.nc").attrs["failure"]


# ------------------------------------------------------------------ item 10
@pytest.fixture(scope="module")
def decay_obs():
    return physode.simulate(Decay(k=2.0), np.linspace(0, 2, 21), noise=0.01, seed=1)


def test_iteration_limit_is_not_success(decay_obs, tmp_path):
    full = physode.fit(Decay(k=0.2), decay_obs, optimizer="lm", **FAST)
    assert full.success and full.status == "converged"
    short = physode.fit(Decay(k=0.2), decay_obs, optimizer="lm", max_iter=2, **FAST)
    assert short.chi2 > 10 * full.chi2
    assert not short.success and short.status == "max_iter"
    assert "not converged" in short.report() and "max_iter" in short.report()
    short.save(tmp_path / "fit.nc")
    back = physode.read_netcdf(tmp_path / "fit.nc")
    assert back.attrs["success"] == 0 and back.attrs["status"] == "max_iter"
    for optimizer in ("lbfgs", "adam"):
        res = physode.fit(Decay(k=0.2), decay_obs, optimizer=optimizer, max_iter=1, **FAST)
        assert not res.success and res.status == "max_iter", optimizer


@pytest.mark.parametrize("optimizer", ["lm", "lbfgs"])
def test_plateau_is_not_success(optimizer):
    obs = physode.simulate(Swing(), np.linspace(0, 2, 21), observe=["theta"], noise=0.01,
                           seed=2)
    res = physode.fit(Swing(length=1e300), obs, optimizer=optimizer, **FAST)
    assert not res.success and res.status == "flat"
    assert "does not respond" in res.stop_reason


def test_callback_stop_is_not_success(decay_obs):
    res = physode.fit(Decay(k=0.2), decay_obs, optimizer="lbfgs", callback=lambda info: True,
                      **FAST)
    assert res.status == "stopped" and not res.success


# ------------------------------------------------------------------ item 11
@pytest.mark.parametrize("kwargs, name", [
    ({"optimizer": "adam", "lr": -0.1}, "lr"),
    ({"optimizer": "lbfgs", "lr": 0.0}, "lr"),
    ({"optimizer": "adam", "lr": math.nan}, "lr"),
    ({"seed": -1, "multistart": 1}, "seed"),
    ({"multistart": 1.5}, "multistart"),
    ({"multistart": -1}, "multistart"),
    ({"max_iter": "ten"}, "max_iter"),
    ({"max_iter": 0}, "max_iter"),
    ({"fine_points": 1}, "fine_points"),
    ({"lm_method": "dogbox", "optimizer": "lm"}, "lm_method"),
    ({"callback": 3}, "callback"),
    ({"compile": "yes"}, "compile"),
    ({"compile": 1}, "compile"),
    ({"options": [("max_steps", 10)]}, "options"),
    ({"method": "rk99"}, "rk99"),
    ({"gradient": "magic"}, "magic"),
    ({"rtol": -1.0}, "rtol"),
    ({"atol": "small"}, "atol"),
    ({"ftol": math.inf}, "ftol"),
    ({"optimizer": "lm", "ftol": 0.0, "xtol": 0.0, "gtol": 0.0}, "ftol"),
])
def test_bad_arguments_are_named(decay_obs, kwargs, name):
    kw = {**FAST, **kwargs}
    with pytest.raises(InvalidArgument, match=name):
        physode.fit(Decay(), decay_obs, **kw)


def test_lm_nonfinite_initial_residuals_is_a_clear_failure(blowup_obs):
    res = physode.fit(Blowup(k=5.0), blowup_obs, optimizer="lm", **SHORT)
    assert res.status == "failed" and "k=5" in res.stop_reason
    assert "Residuals are not finite" not in res.report()


def test_multistart_keeps_a_solvable_start(blowup_obs):
    system = Blowup(k=Parameter(5.0, positive=True, bounds=(0.05, 6.0)))
    res = physode.fit(system, blowup_obs, optimizer="lm", multistart=2, seed=1, **SHORT)
    assert any(s["status"] == "failed" for s in res.starts)
    assert res.success and res.params["k"] == pytest.approx(0.5, rel=0.05)


# ------------------------------------------------------------------ item 15
def test_experiment_observed_only_at_t0_fits_its_initial_state(tmp_path):
    exp = Experiment(t=np.array([0.0]), values={"y": np.array([0.7])}, t0=0.0)
    obs = Observations(system="test:Decay", experiments=[exp])
    system = Decay(k=Parameter(1.0, fixed=True))
    system.set_initial_state({"y": 1.0}, unknown=True)
    res = physode.fit(system, obs, optimizer="lbfgs", **FAST)
    assert res.success, res.stop_reason
    assert res.values == pytest.approx([0.7], abs=1e-6)
    res.save(tmp_path / "fit.nc")


def test_single_time_experiment_among_others(decay_obs):
    e0 = decay_obs.experiments[0]
    single = Experiment(t=np.array([0.0]), values={"y": np.array([1.0])}, name="start")
    obs = Observations(system="test:Decay", experiments=[e0, single])
    res = physode.fit(Decay(k=0.5), obs, optimizer="lm", **FAST)
    assert res.success and res.params["k"] == pytest.approx(2.0, rel=0.02)
    assert res.to_xarray()["y_fine"].sizes["experiment"] == 2
