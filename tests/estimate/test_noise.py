"""Noise models against hand computation and PEtab's own reference implementation."""

import math

import pytest
import torch
from petab.v1.calculate import calculate_single_llh

from physode.errors import InvalidObservations
from physode.estimate.noise import NoiseModel, check_sigma, combined_sigma

CASES = [(d, s) for d in ("normal", "laplace") for s in ("lin", "log", "log10")]


@pytest.mark.parametrize(("distribution", "scale"), CASES)
def test_nllh_equals_petab_reference(distribution: str, scale: str) -> None:
    sim = torch.tensor([0.7, 1.3, 2.9], dtype=torch.float64)
    meas = torch.tensor([0.9, 1.1, 3.4], dtype=torch.float64)
    sigma = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    model = NoiseModel(distribution, scale)
    ours = model.nllh_terms(sim, meas, sigma)
    for i in range(3):
        ref = -calculate_single_llh(float(meas[i]), float(sim[i]), scale, distribution,
                                    float(sigma[i]))
        assert float(ours[i]) == pytest.approx(ref, rel=1e-13, abs=1e-13)


def test_lognormal_by_hand() -> None:
    # log-normal density of m with log-mean ln s and log-sd σ, evaluated by hand
    s, m, sigma = 2.0, 2.5, 0.3
    density = math.exp(-0.5 * ((math.log(m) - math.log(s)) / sigma) ** 2) / (
        m * sigma * math.sqrt(2 * math.pi))
    got = NoiseModel.parse("lognormal").nllh(torch.tensor(s), torch.tensor(m), sigma)
    assert float(got) == pytest.approx(-math.log(density), rel=1e-14)


def test_laplace_by_hand() -> None:
    s, m, b = 1.0, 1.75, 0.4
    density = math.exp(-abs(m - s) / b) / (2 * b)
    got = NoiseModel("laplace").nllh(torch.tensor(s), torch.tensor(m), b)
    assert float(got) == pytest.approx(-math.log(density), rel=1e-14)


@pytest.mark.parametrize(("distribution", "scale"), CASES)
def test_residuals_plus_constants_give_nllh(distribution: str, scale: str) -> None:
    sim = torch.tensor([0.7, 1.3, 2.9, 1.0], dtype=torch.float64)
    meas = torch.tensor([0.9, 1.1, 3.4, float("nan")], dtype=torch.float64)
    model = NoiseModel(distribution, scale)
    r = model.residuals(sim, meas, 0.25)
    total = 0.5 * (r**2).sum() + model.constants(meas, 0.25)
    assert float(total) == pytest.approx(float(model.nllh(sim, meas, 0.25)), rel=1e-12)
    assert float(r[3]) == 0.0  # a missing value contributes nothing


def test_parse_names_and_conflicts() -> None:
    assert NoiseModel.parse("log10-normal") == NoiseModel("normal", "log10")
    assert NoiseModel.parse("laplace", "log") == NoiseModel("laplace", "log")
    assert NoiseModel.parse("normal", "log10").name == "log10-normal"
    with pytest.raises(InvalidObservations, match="unknown noise model 'cauchy'"):
        NoiseModel.parse("cauchy")
    with pytest.raises(InvalidObservations, match="log10 scale but scale 'log'"):
        NoiseModel.parse("log10-normal", "log")
    with pytest.raises(InvalidObservations, match="noise scale 'ln'"):
        NoiseModel("normal", "ln")


def test_sigma_checks_name_the_place() -> None:
    sigma = combined_sigma(0.0, 0.1, torch.tensor([1.0, 0.0, 2.0]))
    with pytest.raises(InvalidObservations, match=r"exp2 / obs 'C'.*sigma = 0 at index \(1,\)"):
        check_sigma(sigma, "exp2 / obs 'C'")
    check_sigma(combined_sigma(0.01, 0.1, torch.tensor([1.0, 0.0])), "ok")
    with pytest.raises(InvalidObservations, match="positive measurements, found -1"):
        NoiseModel("normal", "log").check_measurements(torch.tensor([1.0, -1.0]), "exp0 / y")


def test_gradients_flow_to_sigma_and_simulation() -> None:
    sim = torch.tensor([1.2, 0.8], dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    meas = torch.tensor([1.0, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda s, g: NoiseModel("normal", "log10").nllh(s, meas, g), (sim, sigma))
