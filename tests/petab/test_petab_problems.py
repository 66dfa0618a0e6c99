"""PEtab benchmark problems: nllh at the nominal point against AMICI's llh (datasets/petab/
README.md), gradients against finite differences, ACA against direct, the load cache."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

import physode.petab as petab
from physode.petab import SolverOptions

ROOT = Path(__file__).resolve().parents[2] / "datasets" / "petab"
AMICI_LLH = {  # datasets/petab/README.md
    "Boehm_JProteomeRes2014": -138.22199693517703,
    "Fujita_SciSignal2010": 53.08377736998929,
    "Elowitz_Nature2000": 63.20279991419332,
    "Brannmark_JBC2010": -141.889113770537,
    "Bruno_JExpBot2016": 46.688176988431806,
    "Lucarelli_CellSystems2018": -1681.6059879426584,
}
FAST = ["Boehm_JProteomeRes2014", "Bruno_JExpBot2016"]
SLOW = ["Fujita_SciSignal2010", "Elowitz_Nature2000", "Brannmark_JBC2010",
        "Lucarelli_CellSystems2018"]


def _load(name: str, **opts) -> petab.PetabProblem:
    return petab.load(ROOT / name / f"{name}.yaml", options=SolverOptions(**opts))


@pytest.mark.parametrize("name", FAST)
def test_nllh_at_nominal_equals_amici(name):
    assert abs(_load(name).nllh() + AMICI_LLH[name]) < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_nllh_at_nominal_equals_amici_slow(name):
    assert abs(_load(name).nllh() + AMICI_LLH[name]) < 1e-3


def test_nllh_moves_away_from_nominal():
    prob = _load("Boehm_JProteomeRes2014", rtol=1e-7, atol=1e-9)
    off = prob.nominal
    off["k_phos"] *= 1.5
    assert prob.nllh(off) > prob.nllh() + 1.0


@pytest.mark.slow
def test_gradient_matches_central_differences_boehm():
    prob = _load("Boehm_JProteomeRes2014", rtol=1e-9, atol=1e-11)
    theta = prob.theta().numpy() + 0.05  # off the optimum, where the gradient is not ~0
    _, grad = prob.nllh_and_grad(theta)
    h = 1e-5
    for i in (0, 5, 7):  # a degradation rate, k_phos, a noise parameter
        e = np.zeros_like(theta)
        e[i] = h
        fd = (prob.nllh_and_grad(theta + e)[0] - prob.nllh_and_grad(theta - e)[0]) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=1e-4, abs=1e-4)


@pytest.mark.slow
def test_aca_equals_direct_bruno():
    aca = _load("Bruno_JExpBot2016", rtol=1e-6, atol=1e-8, gradient="aca")
    direct = _load("Bruno_JExpBot2016", rtol=1e-6, atol=1e-8, gradient="direct")
    theta = aca.theta().numpy() + 0.1
    va, ga = aca.nllh_and_grad(theta)
    vd, gd = direct.nllh_and_grad(theta)
    assert va == pytest.approx(vd, rel=1e-12)
    np.testing.assert_allclose(ga, gd, rtol=1e-8, atol=1e-10)


def test_second_load_uses_the_cache():
    name = "Boehm_JProteomeRes2014"
    first = _load(name)
    t0 = time.perf_counter()
    second = _load(name)
    elapsed = time.perf_counter() - t0
    assert second.model.path == first.model.path
    assert not second.model.generated
    assert elapsed < 5.0  # generous on a loaded CI machine; the benchmark measures it


def test_simulation_table_and_xarray():
    prob = _load("Boehm_JProteomeRes2014", rtol=1e-7, atol=1e-9)
    table = prob.simulation_table()
    assert list(table.columns[:4]) == list(prob.measurements.columns[:4]) or \
        "simulation" in table.columns
    assert table["simulation"].notna().all()
    resid = (table["simulation"] - prob.measurements["measurement"].to_numpy()).abs()
    assert resid.max() < 30  # the nominal point fits the data (values are percentages)
    ds = prob.to_xarray()
    np.testing.assert_allclose(ds["simulation"].values, table["simulation"].to_numpy())


def test_system_runs_the_generated_field():
    prob = _load("Boehm_JProteomeRes2014")
    system = prob.system
    assert system.state_names == tuple(prob.model.states)
    y0 = system.y0
    t = torch.tensor(0.5, dtype=torch.float64)
    f = system(t, y0)
    J = system.jacobian(t, y0)
    Jad = torch.autograd.functional.jacobian(lambda y: system(t, y), y0)
    torch.testing.assert_close(J, Jad)
    assert f.shape == y0.shape
    obs = prob.observations
    assert len(obs.experiments) == 1
