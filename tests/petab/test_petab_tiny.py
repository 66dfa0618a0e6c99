"""A tiny PEtab problem with a closed-form likelihood (tiny_problem.py): the objective,
its gradient, ACA = direct, the fit, the system's observables and the thread rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tiny_problem as tiny
import torch

import physode.petab as petab
from physode.petab import SolverOptions
from physode.petab.simulate import single_thread


def _theta(k: float, sigma: float) -> np.ndarray:
    return np.array([math.log10(k), math.log(sigma)])


def _closed(theta: np.ndarray) -> float:
    return tiny.nllh(10.0 ** theta[0], math.exp(theta[1]))


def test_nllh_equals_the_closed_form(yaml_path):
    prob = petab.load(yaml_path, options=SolverOptions(rtol=1e-9, atol=1e-11))
    assert prob.nllh() == pytest.approx(tiny.nllh(tiny.K, tiny.SIGMA_B), abs=2e-6)
    # across the time switch at T = 3 and with the c1 species override (A0 = 2)
    assert prob.nllh({"k": 0.8, "sigma_B": 0.2}) == pytest.approx(tiny.nllh(0.8, 0.2),
                                                                  abs=2e-6)


def test_gradient_matches_the_closed_form(yaml_path):
    prob = petab.load(yaml_path, options=SolverOptions(rtol=1e-8, atol=1e-10))
    theta = _theta(0.8, 0.2)
    value, grad = prob.nllh_and_grad(theta)
    assert value == pytest.approx(_closed(theta), abs=2e-5)
    h = 1e-5
    fd = [(_closed(theta + h * e) - _closed(theta - h * e)) / (2 * h) for e in np.eye(2)]
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-4)


def test_aca_equals_direct(yaml_path):
    opts = dict(rtol=1e-6, atol=1e-8)
    aca = petab.load(yaml_path, options=SolverOptions(**opts, gradient="aca"))
    direct = petab.load(yaml_path, options=SolverOptions(**opts, gradient="direct"))
    theta = _theta(1.3, 0.07)
    va, ga = aca.nllh_and_grad(theta)
    vd, gd = direct.nllh_and_grad(theta)
    assert va == pytest.approx(vd, rel=1e-12)
    np.testing.assert_allclose(ga, gd, rtol=1e-8, atol=1e-10)  # the same discrete gradient


@pytest.mark.slow  # ~45 s of eager rodas4 solves on 2 cores; run by `make test-slow`
def test_fit_reaches_the_closed_form_optimum(yaml_path):
    import scipy.optimize
    best = scipy.optimize.minimize(_closed, _theta(0.4, 0.1), method="Nelder-Mead",
                                   options={"xatol": 1e-10, "fatol": 1e-12})
    prob = petab.load(yaml_path, options=SolverOptions(rtol=1e-7, atol=1e-9))
    # from this start L-BFGS-B's first trial is the corner k = 10, sigma_B = 0.001 of the
    # bounds, where A underflows and the log observable is not finite: the run must
    # recover from the failed evaluation (fitting.run_start) and still reach the optimum
    result = prob.fit(starts=np.array([[-0.46453513, -0.34218466]]), optimizer="lbfgs")
    (start,) = result.starts
    assert start["nfev"] > len(result.history)  # a failed evaluation happened
    assert start["nllh"] == pytest.approx(best.fun, abs=1e-4)
    assert float(result.params["k"]) == pytest.approx(10.0 ** best.x[0], rel=1e-3)
    table = prob.simulation_table(result)
    assert table["simulation"].notna().all() and len(table) == len(tiny.data())


def test_system_observables_match_the_simulation_table(yaml_path):
    prob = petab.load(yaml_path)
    system = prob.system  # first condition, c0
    state = {n: system.y0[i].reshape(1) for i, n in enumerate(system.state_names)}
    obs = system.observables(torch.zeros(1, dtype=torch.float64), state)
    assert set(obs) == {"obs_A", "obs_B"}
    assert float(obs["obs_A"][0]) == pytest.approx(1.0)
    assert float(obs["obs_B"][0]) == pytest.approx(0.0)


def test_evaluations_run_on_one_thread_and_restore_the_count(yaml_path):
    prob = petab.load(yaml_path, options=SolverOptions(rtol=1e-6, atol=1e-8))
    before = torch.get_num_threads()
    seen = []
    original = prob.objective.states

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    prob.objective.states = spy  # type: ignore[method-assign]
    torch.set_num_threads(2)
    try:
        prob.nllh()
        prob.nllh_and_grad(prob.theta())
        assert seen == [1, 1]
        assert torch.get_num_threads() == 2
        with single_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow  # compiles the whole-solve loops (minutes); run by `make test-slow`
def test_compiled_solves_give_the_eager_gradient(yaml_path):
    opts = dict(rtol=1e-8, atol=1e-10)
    eager = petab.load(yaml_path, options=SolverOptions(**opts))
    compiled = petab.load(yaml_path, options=SolverOptions(**opts, compile=True))
    theta = _theta(0.8, 0.2)
    ve, ge = eager.nllh_and_grad(theta)
    vc, gc = compiled.nllh_and_grad(theta)
    assert vc == pytest.approx(ve, rel=1e-9)
    np.testing.assert_allclose(gc, ge, rtol=1e-6, atol=1e-8)


_REVERSIBLE = """<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level2/version4" level="2" version="4">
<model id="flip">
<listOfCompartments><compartment id="c" size="1"/></listOfCompartments>
<listOfSpecies>
<species id="A" compartment="c" initialConcentration="3"/>
<species id="B" compartment="c" initialConcentration="1"/>
</listOfSpecies>
<listOfParameters><parameter id="k1" value="0.7"/><parameter id="k2" value="0.2"/>
</listOfParameters>
<listOfReactions><reaction id="r" reversible="true">
<listOfReactants><speciesReference species="A"/></listOfReactants>
<listOfProducts><speciesReference species="B"/></listOfProducts>
<kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML">
<apply><minus/><apply><times/><ci>k1</ci><ci>A</ci></apply>
<apply><times/><ci>k2</ci><ci>B</ci></apply></apply>
</math></kineticLaw></reaction></listOfReactions>
</model></sbml>
"""


@pytest.mark.parametrize("method", ["engine", "integration"])
def test_steady_state_and_its_gradient_in_closed_form(tmp_path, method):
    """A <-> B: A* = k2 (A0 + B0) / (k1 + k2), the total conserved; the engine's Newton
    (autonomous, no switches) and the integration path (given a breakpoint) agree with
    it, and their gradients with its derivatives in k1, k2 and the start A0."""
    from physode.petab.cache import load_model
    from physode.petab.simulate import GeneratedField, equilibrate

    path = tmp_path / "flip.xml"
    path.write_text(_REVERSIBLE)
    model = load_model(path, [])
    assert model.autonomous and model.states == ["A", "B"]
    k = torch.tensor([0.7, 0.2], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([3.0, 1.0], dtype=torch.float64, requires_grad=True)
    p = torch.stack([torch.tensor(1.0, dtype=torch.float64), k[0], k[1]])  # c, k1, k2
    assert model.parameters == ["c", "k1", "k2"]
    field = GeneratedField(model, p)
    breaks = [] if method == "engine" else [5.0]
    opts = SolverOptions(rtol=1e-9, atol=1e-11)
    x = equilibrate(field, y0, breaks, opts, True, "flip")
    total, (k1, k2) = 4.0, (0.7, 0.2)
    assert float(x[0].detach()) == pytest.approx(k2 * total / (k1 + k2), rel=1e-8)
    g_field, g_y0 = torch.autograd.grad(x[0], [field.p, y0])
    assert float(g_field[1]) == pytest.approx(-k2 * total / (k1 + k2) ** 2, rel=1e-5)
    assert float(g_field[2]) == pytest.approx(k1 * total / (k1 + k2) ** 2, rel=1e-5)
    assert g_y0.tolist() == pytest.approx([k2 / (k1 + k2)] * 2, rel=1e-5)


def test_fits_of_the_sbml_system_take_staggered_sensitivities(yaml_path, staggered_calls):
    """physode.fit on the PEtab problem's System: the generated closed forms give the
    staggered residual Jacobian, equal to the augmented one (non-autonomous model: the
    time switch)."""
    from physode.estimate.problem import FitProblem
    from physode.estimate.settings import SolverSettings

    prob = petab.load(yaml_path)
    system, obs = prob.system, prob.observations
    c0 = [e for e in obs.experiments if e.name == "c0"]
    obs = type(obs)(system=obs.system, experiments=c0, metadata=obs.metadata)
    problem = FitProblem(system, obs, SolverSettings("rodas5p", rtol=1e-10, atol=1e-12))
    assert problem.staggered is not None
    fast = problem.residuals_and_jacobian()
    assert staggered_calls, "the staggered path did not run"
    problem.staggered = None
    slow = problem.residuals_and_jacobian()
    assert np.abs(fast.J).max() > 0
    np.testing.assert_allclose(fast.J, slow.J, rtol=0, atol=1e-6 * np.abs(slow.J).max())
    np.testing.assert_allclose(fast.r, slow.r, rtol=0, atol=1e-6 * np.abs(slow.r).max())
