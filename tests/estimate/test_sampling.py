"""Posterior sampling (issue 16): NUTS (ACA gradients) and emcee on y = A e^(-k t) with
flat priors against the marginal of k by quadrature; priors; InferenceData export."""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pytest
from decay_system import Decay

import physode
from physode import Parameter, StateVar, System
from physode.errors import InvalidArgument
from physode.estimate.posterior import LogPrior, Potential
from physode.estimate.problem import FitProblem
from physode.model.priors import Normal

#: A loose solver keeps the gradients cheap; its error (~1e-4 relative) is far below the
#: 5% noise, so the posterior is that of the exact model to well within its Monte Carlo error.
TOL = {"rtol": 1e-4, "atol": 1e-7}


@pytest.fixture(scope="module")
def decay_fit():
    obs = physode.simulate(Decay(k=0.8), np.linspace(0, 3, 12), noise=0.05, seed=3)
    system = Decay(k=0.5)
    system.set_initial_state({"y": 1.5}, unknown=True)
    return physode.fit(system, obs, optimizer="lm", progress=False, **TOL)


def marginal_of_k(obs):
    """Mean and sd of k under flat priors on A and k: A integrates out analytically,
    p(k) ~ S(k)^(-1/2) exp(-chi2_min(k)/2) with S(k) = sum w e^(-2 k t); then quadrature."""
    exp = obs.experiments[0]
    y = np.ravel(exp.values["y"])
    w = 1.0 / np.ravel(np.broadcast_to(exp.sigma["y"], exp.values["y"].shape)) ** 2
    k = np.linspace(0.4, 1.3, 20001)
    e = np.exp(-np.outer(k, exp.t))
    S = (w * e * e).sum(1)
    a = (w * y * e).sum(1) / S
    chi2 = (w * (y - a[:, None] * e) ** 2).sum(1)
    logp = -0.5 * chi2 - 0.5 * np.log(S)
    p = np.exp(logp - logp.max())
    p /= np.trapezoid(p, k)
    mean = np.trapezoid(k * p, k)
    sd = math.sqrt(np.trapezoid((k - mean) ** 2 * p, k))
    return mean, sd


def check_against_quadrature(idata, obs):
    mean, sd = marginal_of_k(obs)
    summary = az.summary(idata, var_names=["k"], round_to="none")
    got_mean = float(summary.loc["k", "mean"])
    got_sd = float(summary.loc["k", "sd"])
    mcse = float(summary.loc["k", "mcse_mean"])
    assert abs(got_mean - mean) <= 4 * mcse, (got_mean, mean, mcse)
    assert abs(got_sd - sd) <= 0.1 * sd, (got_sd, sd)
    assert float(az.rhat(idata)["k"]) <= 1.01


def test_nuts_matches_quadrature(decay_fit, tmp_path):
    # compile=False: "auto" compiles when the eager estimate is long, which on a loaded
    # machine changes the chains' round-off and so the draws this test pins
    idata = physode.sample(decay_fit, method="nuts", draws=150, chains=4, warmup=50, seed=0,
                           compile=False)
    assert idata.posterior["k"].shape == (4, 150)
    assert idata.posterior.attrs["method"] == "nuts"
    assert "flat in k" in idata.posterior.attrs["priors"]
    assert int(idata.sample_stats["diverging"].sum()) == 0
    check_against_quadrature(idata, decay_fit.observations)
    # the InferenceData saves to netCDF; the fit keeps the draws and saves them too
    idata.to_netcdf(str(tmp_path / "posterior.nc"))
    back = az.from_netcdf(str(tmp_path / "posterior.nc"))
    np.testing.assert_allclose(back.posterior["k"].values, idata.posterior["k"].values)
    assert decay_fit.samples is idata
    decay_fit.save(tmp_path / "fit.nc")
    ds = physode.read_netcdf(tmp_path / "fit.nc")
    assert ds["posterior"].shape == (4, 150, 2)
    assert float(ds["posterior_r_hat"].sel(parameter="k")) <= 1.01
    np.testing.assert_allclose(ds["posterior"].sel(parameter="k").values,
                               idata.posterior["k"].values)


def test_emcee_matches_quadrature(decay_fit):
    idata = physode.sample(decay_fit, method="emcee", draws=500, chains=4, warmup=100, seed=0)
    assert idata.posterior["k"].shape == (16, 500)  # 8 walkers per parameter
    assert idata.posterior.attrs["method"] == "emcee"
    check_against_quadrature(idata, decay_fit.observations)


def test_log_prior_flat_and_declared():
    """Flat on the declared scale plus the transform's log-Jacobian; a declared prior's
    density comes through the fit's residuals, and only the Jacobian to its variable
    (x, or ln x for a prior on the log scale) is added here."""

    class Three(System):
        a = Parameter(2.0, positive=True)
        b = Parameter(0.5, bounds=(0.0, 1.0), scale="linear")
        c = Parameter(3.0, positive=True, scale="log")
        state_vars = (StateVar("y"),)

        def vector_field(self, t, s):
            return {"y": -self.a * s["y"]}

    system = Three()
    u = system.free_vector().detach()
    a, b = 2.0, 0.5
    # a = e^u flat in a: ln a; b logistic on (0, 1): ln(b (1 - b)); c flat in ln c: 0
    expected = math.log(a) + math.log(b * (1 - b))
    assert float(LogPrior(system)(u)) == pytest.approx(expected, rel=1e-12)
    system.add_parameter("a", Parameter(2.0, positive=True,
                                        prior=Normal(0.5, 0.2, scale="log")))
    u = system.free_vector().detach()
    # a prior on ln a: the Jacobian d ln a / du = 1 adds nothing
    assert float(LogPrior(system)(u)) == pytest.approx(math.log(b * (1 - b)), rel=1e-12)


def test_bad_arguments(decay_fit):
    with pytest.raises(InvalidArgument, match="method"):
        physode.sample(decay_fit, method="hmc")
    with pytest.raises(InvalidArgument, match="draws"):
        physode.sample(decay_fit, draws=0)
    with pytest.raises(InvalidArgument, match="FitResult"):
        physode.sample(None)
    with pytest.raises(InvalidArgument, match="compile must be"):
        physode.sample(decay_fit, draws=5, compile="fast")


class _Stop(Exception):
    pass


@pytest.mark.parametrize("fit_compiled, compile, expected", [
    (True, "auto", True), (False, "auto", False), (True, False, False), (False, True, True)])
def test_the_whitening_jacobian_is_solved_compiled_when_that_is_already_decided(
        decay_fit, monkeypatch, fit_compiled, compile, expected):
    """A compiled fit built the graphs: the sampler's first Jacobian (for the whitening)
    uses them instead of an eager solve (5.6 s of a three-body ``sample`` call)."""
    import dataclasses

    from physode.estimate.problem import FitProblem

    seen = []

    def record(self, *args, **kwargs):
        seen.append(self.compile)
        raise _Stop

    monkeypatch.setattr(FitProblem, "residuals_and_jacobian", record)
    monkeypatch.setattr(decay_fit, "settings",
                        dataclasses.replace(decay_fit.settings, compile=fit_compiled))
    with pytest.raises(_Stop):
        physode.sample(decay_fit, method="nuts", draws=10, chains=1, compile=compile)
    assert seen == [expected]


def test_a_draws_density_comes_from_the_gradient_evaluation(decay_fit, monkeypatch):
    """NUTS draws are points its trajectories evaluated: their log density is looked up,
    not solved again (100 draws cost 100 solves before)."""
    problem = FitProblem(decay_fit.system, decay_fit.observations,
                         decay_fit.settings.solver, learnable=False)
    center = problem.get_vector()
    pot = Potential(problem, center, np.eye(center.size))
    calls = []
    real = Potential.value
    monkeypatch.setattr(Potential, "value", lambda self, z: calls.append(1) or real(self, z))
    z = np.array([0.01, -0.02])
    U, _ = pot.value_and_grad(z)
    assert pot.known_value(z.copy()) == U and not calls
    other = pot.known_value(z + 1e-3)
    assert len(calls) == 1 and other != U
    assert abs(real(pot, z) - U) <= 1e-12 * abs(U)
