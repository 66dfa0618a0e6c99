"""Priors: densities against hand computation, residual forms, and Parameter(prior=...)."""

import math

import pytest
import torch

from physode import Parameter
from physode.errors import InvalidSystem
from physode.model.priors import LOG_OFFSET, Laplace, LogNormal, Normal, Uniform, prior_from

X = torch.tensor([0.3, 1.7, 4.0], dtype=torch.float64)


def _hand(prior, x: float) -> float:
    if isinstance(prior, LogNormal):
        lx = math.log(x)
        return -math.log(math.exp(-0.5 * ((lx - prior.mu) / prior.sigma) ** 2)
                         / (x * prior.sigma * math.sqrt(2 * math.pi)))
    z = {"linear": x, "log": math.log(x), "log10": math.log10(x)}[prior.scale]
    if isinstance(prior, Normal):
        return -math.log(math.exp(-0.5 * ((z - prior.mu) / prior.sigma) ** 2)
                         / (prior.sigma * math.sqrt(2 * math.pi)))
    if isinstance(prior, Laplace):
        return -math.log(math.exp(-abs(z - prior.mu) / prior.b) / (2 * prior.b))
    return math.log(prior.upper - prior.lower)


PRIORS = [Normal(1.0, 0.5), Normal(0.2, 0.7, scale="log"), Normal(-0.1, 0.3, scale="log10"),
          LogNormal(0.4, 0.6), Laplace(1.2, 0.8), Laplace(0.0, 0.5, scale="log"),
          Uniform(0.1, 5.0), Uniform(-2.0, 2.0, scale="log")]


@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_negative_log_density_by_hand(prior) -> None:
    for x in X.tolist():
        got = float(prior.nllh(torch.tensor(x, dtype=torch.float64)))
        assert got == pytest.approx(_hand(prior, x), rel=1e-13, abs=1e-13)


@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_half_sum_of_squared_residuals_is_the_density_up_to_a_constant(prior) -> None:
    def half(x: torch.Tensor) -> float:
        return 0.5 * float(prior.residuals(x).square().sum())

    a, b = X[:1], X[1:2]
    assert half(a) - half(b) == pytest.approx(float(prior.nllh(a) - prior.nllh(b)),
                                              rel=1e-12, abs=1e-12)


def test_lognormal_residual_carries_the_log_term() -> None:
    r = LogNormal(0.0, 1.0).residuals(torch.tensor(2.0, dtype=torch.float64))
    assert r.shape == (2,)
    assert float(0.5 * r[1] ** 2) == pytest.approx(math.log(2.0) + LOG_OFFSET)


def test_parameter_carries_its_prior() -> None:
    p = Parameter(0.5, positive=True, prior=LogNormal(0.0, 1.0))
    assert p.prior == LogNormal(0.0, 1.0)
    assert p.replace(value=0.7).prior == p.prior
    assert "prior=LogNormal(mu=0, sigma=1)" in repr(p)
    assert p.describe()["prior"] == {"kind": "lognormal", "scale": "linear", "mu": 0.0,
                                     "sigma": 1.0}
    assert prior_from(p.describe()["prior"], "here") == p.prior


def test_bad_priors_are_refused() -> None:
    with pytest.raises(InvalidSystem, match="prior must be a physode.priors.Prior"):
        Parameter(1.0, prior=(0, 1))
    with pytest.raises(InvalidSystem, match="outside its Uniform prior"):
        Parameter(7.0, prior=Uniform(0.0, 5.0), name="k")
    with pytest.raises(InvalidSystem, match="sigma must be positive"):
        Normal(0.0, -1.0)
    with pytest.raises(InvalidSystem, match="here: unknown prior kind 'cauchy'"):
        prior_from({"kind": "cauchy"}, "here")
