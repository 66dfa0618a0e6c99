"""Experiments as scientists run them, in a fit: noise models (likelihoods by hand,
proportional noise), conditions, priors (closed form), observables, bad input."""

import math

import numpy as np
import pytest
import torch
from torch import Tensor

import physode
from physode import Parameter, StateVar, System
from physode.data.experiment_parts import NoiseSpec
from physode.errors import InvalidObservations
from physode.estimate.conditions import prepare_experiments
from physode.estimate.problem import FitProblem
from physode.estimate.settings import SolverSettings
from physode.estimate.synthetic import simulate_experiments
from physode.model.priors import Normal

TIGHT = SolverSettings(rtol=1e-11, atol=1e-13)


class Decay(System):
    """y' = -k f y, observed as y or as scale * y + offset."""

    k = Parameter(0.8, positive=True)
    f = Parameter(1.0, positive=True, fixed=True)
    scale = Parameter(1.0, positive=True)
    offset = Parameter(0.0, fixed=True)
    state_vars = (StateVar("y"),)
    observable_vars = (StateVar("signal"),)

    def __init__(self, **kw: object) -> None:
        super().__init__()
        self.set_initial_state({"y": 2.0})
        self.configure(**kw)

    def vector_field(self, t: Tensor, s: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"y": -self.k * self.f * s["y"]}

    def observables(self, t: Tensor, s: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"signal": self.scale * s["y"] + self.offset}


T = np.array([0.3, 0.7, 1.2, 2.0])
MEAS = np.array([1.6, 1.2, 0.8, 0.45])


def _one(noise: NoiseSpec, name: str = "y") -> physode.Observations:
    exp = physode.Experiment(t=T, values={name: MEAS}, t0=0.0, noise={name: noise})
    return physode.Observations(system=f"{Decay.__module__}:Decay", experiments=[exp])


@pytest.mark.parametrize(("noise", "density"), [
    (NoiseSpec("normal", "log", a=0.2),
     lambda m, s, sg: math.exp(-0.5 * ((math.log(m) - math.log(s)) / sg) ** 2)
     / (m * sg * math.sqrt(2 * math.pi))),
    (NoiseSpec("laplace", a=0.15), lambda m, s, b: math.exp(-abs(m - s) / b) / (2 * b)),
    (NoiseSpec("normal", a=0.05, b=0.1),
     lambda m, s, sg: math.exp(-0.5 * ((m - s) / sg) ** 2) / (sg * math.sqrt(2 * math.pi))),
], ids=["log-normal", "laplace", "combined"])
def test_objective_is_the_likelihood_by_hand(noise: NoiseSpec, density) -> None:
    system = Decay(k=0.8)
    problem = FitProblem(system, _one(noise), TIGHT)
    sim = 2.0 * np.exp(-0.8 * T)
    sigma = noise.a + noise.b * np.abs(sim)
    expected = -sum(math.log(density(m, s, sg)) for m, s, sg in zip(MEAS, sim, sigma))
    assert problem.objective() == pytest.approx(expected, rel=1e-9)
    # half the sum of squared residuals differs from it by a constant only
    r0 = problem.residuals().r
    system.set_params(k=0.6)
    r1 = problem.residuals().r
    sim1 = 2.0 * np.exp(-0.6 * T)
    sigma1 = noise.a + noise.b * np.abs(sim1)
    expected1 = -sum(math.log(density(m, s, sg)) for m, s, sg in zip(MEAS, sim1, sigma1))
    assert 0.5 * (r1 @ r1 - r0 @ r0) == pytest.approx(expected1 - expected, rel=1e-9)


def test_jacobian_of_the_extended_residuals_matches_finite_differences() -> None:
    system = Decay(k=0.8, scale=1.3)
    system.add_parameter("b_rel", Parameter(0.1, positive=True))
    obs = _one(NoiseSpec("normal", a=0.02, b="b_rel"), name="signal")
    problem = FitProblem(system, obs, TIGHT)
    ev = problem.residuals_and_jacobian()
    x0 = problem.get_vector()
    fd = np.zeros_like(ev.J)
    for j in range(x0.size):
        for sign in (1, -1):
            x = x0.copy()
            x[j] += sign * 1e-6
            problem.set_vector(x)
            fd[:, j] += sign * problem.residuals().r / 2e-6
    problem.set_vector(x0)
    assert ev.J.shape == (problem.n_residuals, 3)
    np.testing.assert_allclose(ev.J, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("optimizer", ["lm", "lbfgs"])
def test_proportional_noise_fit_recovers_the_truth(optimizer: str) -> None:
    truth = Decay(k=0.9, scale=2.0)
    designs = [physode.Experiment(t=np.linspace(0.1, 4.0, 40), values={}, t0=0.0,
                                  noise={"signal": NoiseSpec(a=0.0, b=0.05)})]
    obs = simulate_experiments(truth, designs, ["signal"], seed=3)
    res = physode.fit(Decay(k=0.5, scale=1.0), obs, optimizer=optimizer, progress=False,
                      compile=False, rtol=1e-9, atol=1e-11)
    assert res.success
    assert res.estimate.objective["kind"] == "negative log-likelihood"
    for name, true in (("k", 0.9), ("scale", 2.0)):
        assert abs(res.value[name] - true) < 2.5 * res.stderr[name]
    ds = res.to_xarray()
    assert ds["signal_observed"].attrs["output_kind"] == "observable"
    np.testing.assert_allclose(ds["signal_fitted"].values[0],
                               res.trajectories.outputs[0]["signal"])


def test_conditions_known_and_fitted_per_experiment_recover_truth() -> None:
    truth = Decay(k=0.7)
    t = np.linspace(0.2, 3.0, 15)
    designs = [physode.Experiment(t=t, values={}, t0=0.0, name="warm",
                                  conditions={"f": 2.0, "scale": 1.5}),
               physode.Experiment(t=t, values={}, t0=0.0, name="cold",
                                  conditions={"scale": 0.5})]
    clean = simulate_experiments(truth, designs, ["signal"])
    for exp in clean:  # the fit estimates one scale per experiment
        exp.conditions["scale"] = f"scale_{exp.name}"
        exp.sigma["signal"] = np.asarray(0.01)
    clean.declarations = {f"scale_{n}": Parameter(1.0, positive=True) for n in ("warm", "cold")}
    system = Decay(k=0.3)
    res = physode.fit(system, clean, optimizer="lm", progress=False, compile=False,
                      rtol=1e-10, atol=1e-12)
    assert system.parameter_specs()["scale"].fixed  # every experiment overrides it
    assert res.value["k"] == pytest.approx(0.7, rel=1e-6)
    assert res.value["scale_warm"] == pytest.approx(1.5, rel=1e-6)
    assert res.value["scale_cold"] == pytest.approx(0.5, rel=1e-6)


class Line(System):
    """y' = b: y(t) = b t, linear in b."""

    b = Parameter(1.0)
    state_vars = (StateVar("y"),)

    def __init__(self) -> None:
        super().__init__()
        self.set_initial_state({"y": 0.0})

    def vector_field(self, t: Tensor, s: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"y": self.b * torch.ones_like(s["y"])}


@pytest.mark.parametrize("optimizer", ["lm", "lbfgs"])
def test_a_normal_prior_moves_the_estimate_as_the_closed_form_says(optimizer: str) -> None:
    t = np.linspace(0.5, 2.0, 6)
    y = np.array([0.9, 2.3, 2.8, 4.1, 4.6, 6.2])
    sigma, mu, s = 0.4, 1.0, 0.3
    exp = physode.Experiment(t=t, values={"y": y}, t0=0.0, sigma={"y": np.asarray(sigma)})
    obs = physode.Observations(system=f"{Line.__module__}:Line", experiments=[exp])
    system = Line()
    system.set_params(b=Parameter(1.0, prior=Normal(mu, s)))
    res = physode.fit(system, obs, optimizer=optimizer, progress=False, compile=False,
                      gtol=1e-10)
    precision = (t @ t) / sigma**2 + 1 / s**2
    b_map = ((t @ y) / sigma**2 + mu / s**2) / precision
    assert res.value["b"] == pytest.approx(b_map, rel=1e-6)
    assert res.stderr["b"] == pytest.approx(1 / math.sqrt(precision), rel=1e-6)
    assert res.estimate.objective["kind"] == "negative log-posterior"
    text = res.report()
    assert "maximum a posteriori" in text and "b: Normal(mu=1, sigma=0.3)" in text


def test_bad_input_is_named() -> None:
    obs = _one(NoiseSpec(a=0.1))
    obs[0].conditions["temperature"] = 300.0
    with pytest.raises(InvalidObservations, match="conditions: attribute 'temperature': "
                                                   "Decay has no parameter 'temperature'"):
        physode.fit(Decay(), obs, progress=False)
    # proportional noise gives sigma = 0 where the prediction is 0
    exp = physode.Experiment(t=np.array([0.0, 1.0]), values={"y": np.array([0.1, 0.2])},
                             noise={"y": NoiseSpec(a=0.0, b=0.1)})
    obs = physode.Observations(system=f"{Decay.__module__}:Decay", experiments=[exp])
    system = Decay()
    system.set_initial_state({"y": 0.0})
    with pytest.raises(InvalidObservations, match="experiment 'exp0', output 'y', field "
                                                   "'noise': the noise model gives sigma = 0"):
        physode.fit(system, obs, progress=False, compile=False)


def test_prepare_experiments_adds_declared_parameters() -> None:
    obs = _one(NoiseSpec(a="sigma_y"))
    obs.declarations = {"sigma_y": Parameter(0.2, positive=True)}
    system = Decay()
    assert prepare_experiments(system, obs) == []
    assert system.parameter_specs()["sigma_y"].positive


def test_an_estimated_noise_level_is_recovered_with_a_calibrated_stderr() -> None:
    truth = Decay(k=0.9)
    truth.add_parameter("sigma_y", Parameter(0.05, positive=True))
    design = physode.Experiment(t=np.linspace(0.1, 4.0, 80), values={}, t0=0.0,
                                noise={"y": NoiseSpec(a="sigma_y")})
    obs = simulate_experiments(truth, [design], ["y"], seed=11)
    obs.declarations = {"sigma_y": Parameter(0.2, positive=True)}
    res = physode.fit(Decay(k=0.5), obs, optimizer="lm", progress=False, compile=False,
                      rtol=1e-9, atol=1e-11)
    assert res.success
    sigma, err = res.value["sigma_y"], float(res.stderr["sigma_y"])
    assert abs(sigma - 0.05) < 2.5 * err
    # the Fisher information of a normal noise level: stderr = sigma / sqrt(2 N)
    assert err == pytest.approx(sigma / math.sqrt(2 * 80), rel=0.05)
    assert abs(res.value["k"] - 0.9) < 2.5 * float(res.stderr["k"])
