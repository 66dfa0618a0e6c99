"""Profile likelihoods (issue 16): the interval of y = A e^(-k t) against brute force, an
open profile for a non-identifiable parameter, executors, export and report."""

from __future__ import annotations

import pickle
from concurrent.futures import Executor, Future

import numpy as np
import pytest
from decay_system import Decay
from scipy.optimize import brentq, minimize_scalar

import physode
from physode import Parameter, StateVar, System
from physode.errors import InvalidArgument
from physode.estimate.profiles import chi2_threshold

TOL = {"rtol": 1e-7, "atol": 1e-10}


class Product(System):
    """y' = -a b y: only the product a b is identifiable."""

    a = Parameter(1.0, positive=True)
    b = Parameter(1.0, positive=True)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 1.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": -self.a * self.b * s["y"]}


@pytest.fixture(scope="module")
def decay_fit():
    obs = physode.simulate(Decay(k=0.8), np.linspace(0, 3, 12), noise=0.05, seed=3)
    system = Decay(k=0.5)
    system.set_initial_state({"y": 1.5}, unknown=True)
    return physode.fit(system, obs, optimizer="lm", progress=False, **TOL)


def brute_force_interval(obs, confidence):
    """The exact profile of k: for fixed k the best A is linear least squares."""
    exp = obs.experiments[0]
    y = np.ravel(exp.values["y"])
    w = 1.0 / np.ravel(np.broadcast_to(exp.sigma["y"], exp.values["y"].shape)) ** 2

    def chi2(k):
        e = np.exp(-k * exp.t)
        a = np.sum(w * y * e) / np.sum(w * e * e)
        return float(np.sum(w * (y - a * e) ** 2))

    best = minimize_scalar(chi2, bracket=(0.5, 0.8, 1.2), tol=1e-12)
    thr = chi2_threshold(confidence)
    lo = brentq(lambda k: chi2(k) - best.fun - thr, 1e-3, best.x, xtol=1e-14)
    hi = brentq(lambda k: chi2(k) - best.fun - thr, best.x, 10.0, xtol=1e-14)
    return lo, hi


@pytest.fixture(scope="module")
def profiled(decay_fit):
    return physode.profile(decay_fit, ["k", "y0.y"])


def test_interval_matches_brute_force(decay_fit, profiled):
    lo, hi = brute_force_interval(decay_fit.observations, 0.95)
    got = profiled.interval("k")
    assert got[0] is not None and got[1] is not None
    width = hi - lo
    assert abs(got[0] - lo) <= 0.002 * width
    assert abs(got[1] - hi) <= 0.002 * width
    p = profiled["k"]
    assert p.identifiable and np.all(np.diff(p.values) > 0)
    # the profile is minimal (zero) at the estimate and crosses the threshold at the ends
    assert np.min(p.delta) == pytest.approx(0.0, abs=1e-6)
    assert np.max(p.delta) >= profiled.threshold
    assert decay_fit.profiles is profiled


def test_threshold_is_the_chi2_quantile():
    assert chi2_threshold(0.95) == pytest.approx(3.841458820694124, rel=1e-12)
    assert chi2_threshold(0.6826894921370859) == pytest.approx(1.0, rel=1e-9)


def test_report_and_export(decay_fit, profiled, tmp_path):
    decay_fit.profiles = profiled
    text = decay_fit.report()
    assert "Profile likelihood" in text and "Gauss-Newton 95%" in text and "profile 95%" in text
    ds = decay_fit.to_xarray()
    assert float(ds["profile_lower"].sel(profile_parameter="k")) == pytest.approx(
        profiled.interval("k")[0])
    assert ds.attrs["profile_confidence"] == pytest.approx(0.95)
    decay_fit.save(tmp_path / "fit.nc")
    back = physode.read_netcdf(tmp_path / "fit.nc")
    assert float(back["profile_upper"].sel(profile_parameter="y0.y")) == pytest.approx(
        profiled.interval("y0.y")[1])
    fig = profiled.plot(tmp_path / "profiles.png")
    assert (tmp_path / "profiles.png").stat().st_size > 0
    assert fig is not None


def test_non_identifiable_profile_is_open():
    obs = physode.simulate(Product(a=1.0, b=0.7), np.linspace(0, 3, 10), noise=0.02, seed=1)
    res = physode.fit(Product(a=1.2, b=0.8), obs, optimizer="lm", progress=False, **TOL)
    prof = physode.profile(res, "a", max_steps=4)
    assert prof.interval("a") == (None, None)
    text = prof.statement("a")
    assert "practically non-identifiable" in text and "lower and upper" in text
    assert prof.nonidentifiable() == ["a"]
    # along the profile the other parameter keeps the product: the ridge a b = const
    p = prof["a"]
    ab = p.path[:, 0] * p.path[:, 1]
    assert np.allclose(ab, ab[0], rtol=1e-5)
    assert np.max(np.abs(p.delta)) < 1e-4
    assert p.values[0] < 0.5 * p.estimate and p.values[-1] > 2 * p.estimate


class PicklingExecutor(Executor):
    """Runs each task at once, but only after a pickle round trip of the task and of its
    result: what a process pool or a Dask cluster does to them."""

    def submit(self, fn, /, *args, **kwargs):
        fn, args = pickle.loads(pickle.dumps((fn, args)))
        future = Future()
        future.set_result(pickle.loads(pickle.dumps(fn(*args, **kwargs))))
        return future


def test_executor_tasks_pickle(decay_fit, profiled):
    remote = physode.profile(decay_fit, "k", executor=PicklingExecutor())
    assert remote.interval("k") == pytest.approx(profiled.interval("k"), rel=1e-9)
    assert decay_fit.system.k.item() == pytest.approx(float(decay_fit.values[0]), rel=1e-14)


def test_bad_arguments(decay_fit):
    with pytest.raises(InvalidArgument, match="confidence"):
        physode.profile(decay_fit, "k", confidence=1.5)
    with pytest.raises(InvalidArgument, match="'q' is not a fitted parameter"):
        physode.profile(decay_fit, "q")
    with pytest.raises(InvalidArgument, match="FitResult"):
        physode.profile("fit.nc")
    with pytest.raises(InvalidArgument, match="compile must be"):
        physode.profile(decay_fit, "k", compile="yes")


def test_auto_compiles_only_long_or_compiled_profiles():
    from physode.estimate.profiles import AUTO_COMPILE_S, use_compile

    assert not use_compile("auto", False, 0.5 * AUTO_COMPILE_S)
    assert use_compile("auto", False, 2.0 * AUTO_COMPILE_S)
    assert use_compile("auto", True, 0.0)
    assert not use_compile(False, True, 1e9) and use_compile(True, False, 0.0)


@pytest.mark.slow
def test_compiled_profile_equals_eager(decay_fit, profiled):
    fast = physode.profile(decay_fit, ["k", "y0.y"], compile=True)
    for label in ("k", "y0.y"):
        np.testing.assert_allclose(fast.interval(label), profiled.interval(label),
                                   rtol=1e-8)
