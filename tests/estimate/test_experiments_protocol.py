"""Dosing events, input series and pre-equilibration in a fit, against closed forms and
finite differences."""

import math

import numpy as np
import pytest
import torch
from torch import Tensor

import physode
from physode import Parameter, StateVar, System
from physode.data.experiment_parts import InputSeries
from physode.errors import InvalidObservations
from physode.estimate.problem import FitProblem
from physode.estimate.settings import SolverSettings
from physode.model.observables import Dose

TIGHT = SolverSettings(rtol=1e-11, atol=1e-13)


class Kinetics(System):
    """y' = p u(t) - k y (u = 1 without an input series)."""

    k = Parameter(0.7, positive=True)
    p = Parameter(0.0)
    dose = Parameter(0.5, positive=True)
    state_vars = (StateVar("y"),)

    def __init__(self, forced: bool = False) -> None:
        super().__init__()
        self.forced = forced
        self.set_initial_state({"y": 1.0})

    def vector_field(self, t: Tensor, s: dict[str, Tensor]) -> dict[str, Tensor]:
        u = self.input("u", t) if self.forced else 1.0
        return {"y": self.p * u - self.k * s["y"]}


def _obs(t: np.ndarray, **parts: object) -> physode.Observations:
    exp = physode.Experiment(t=t, values={"y": np.ones(t.size)}, t0=0.0,
                             sigma={"y": np.asarray(0.1)}, **parts)
    return physode.Observations(system=f"{Kinetics.__module__}:Kinetics", experiments=[exp])


def _fd_jacobian(problem: FitProblem, h: float = 1e-6) -> np.ndarray:
    x0 = problem.get_vector()
    cols = []
    for j in range(x0.size):
        rs = []
        for sign in (1, -1):
            x = x0.copy()
            x[j] += sign * h
            problem.set_vector(x)
            rs.append(problem.residuals().r)
        cols.append((rs[0] - rs[1]) / (2 * h))
    problem.set_vector(x0)
    return np.stack(cols, axis=1)


def test_boluses_closed_form_and_exact_sensitivities() -> None:
    k, D = 0.7, 0.5
    t = np.array([0.5, 1.5, 3.0])
    obs = _obs(t, dosing=[Dose(1.0, "dose", "y"), Dose(2.0, "dose", "y")])
    system = Kinetics()
    problem = FitProblem(system, obs, TIGHT)
    y = problem.predict()[0][:, 0].numpy()
    e = math.exp(-k)
    closed = [math.exp(-0.5 * k), (e + D) * math.exp(-0.5 * k), ((e + D) * e + D) * e]
    np.testing.assert_allclose(y, closed, rtol=1e-9)
    # d y(3)/dk and d y(3)/d dose, in unconstrained coordinates (both are log-scaled)
    ev = problem.residuals_and_jacobian()
    names = system.free_names()
    dy3_dk = -3 * e**3 - 2 * D * e**2 - D * e
    dy3_ddose = e**2 + e
    row = ev.J[2] * 0.1  # residual = (y - 1) / 0.1
    assert row[names.index("k")] == pytest.approx(dy3_dk * k, rel=1e-8)
    assert row[names.index("dose")] == pytest.approx(dy3_ddose * D, rel=1e-8)
    # ACA through the jumps: the gradient of 0.5 |r|^2 / n equals J^T r / n
    _, g, r = problem.loss_and_grad()
    np.testing.assert_allclose(g.numpy(), ev.J.T @ r / problem.n_data, rtol=1e-8)


def test_linear_input_series_is_integrated_exactly() -> None:
    t = np.array([0.5, 1.0, 2.0])
    u = InputSeries([0.0, 1.0, 2.0], [0.0, 2.0, 1.0], "linear")
    system = Kinetics(forced=True)
    system.set_params(k=Parameter(1e-9, fixed=True), p=1.0)
    system.set_initial_state({"y": 0.0})
    problem = FitProblem(system, _obs(t, inputs={"u": u}), TIGHT)
    y = problem.predict()[0][:, 0].numpy()
    np.testing.assert_allclose(y, [0.25, 1.0, 2.5], rtol=1e-8)
    ev = problem.residuals_and_jacobian()
    np.testing.assert_allclose(ev.J, _fd_jacobian(problem), rtol=1e-6, atol=1e-8)


def test_unsorted_input_times_are_named() -> None:
    obs = _obs(np.array([1.0, 2.0]), inputs={"u": InputSeries([0.0, 2.0, 1.0], [1, 2, 3])})
    with pytest.raises(InvalidObservations, match=r"experiments/exp0'/inputs/u: times must be "
                                                  "strictly increasing"):
        physode.fit(Kinetics(forced=True), obs, progress=False)


def test_preequilibration_closed_form_and_gradients() -> None:
    k, p, p_pre = 0.7, 0.3, 1.2
    t = np.array([0.5, 1.0, 2.5])
    obs = _obs(t, preequilibration={"p": p_pre})
    system = Kinetics()
    system.set_params(p=p)
    system.fix("dose")
    problem = FitProblem(system, obs, TIGHT)
    y = problem.predict()[0][:, 0].numpy()
    closed = p / k + (p_pre / k - p / k) * np.exp(-k * t)
    np.testing.assert_allclose(y, closed, rtol=1e-8)
    ev = problem.residuals_and_jacobian()
    fd = _fd_jacobian(problem)
    np.testing.assert_allclose(ev.J, fd, rtol=1e-6, atol=1e-7)
    _, g, r = problem.loss_and_grad()  # ACA, with the IFT gradient of the steady state
    np.testing.assert_allclose(g.numpy(), fd.T @ r / problem.n_data, rtol=1e-6)


def test_pk_example_model_fits_with_default_dosing() -> None:
    from physode.data.experiment_parts import NoiseSpec
    from physode.estimate.synthetic import simulate_experiments
    from physode.model.registry import get

    truth = get("pk-oral", ka=1.1, ke=0.2, V=20.0)
    design = physode.Experiment(t=np.array([1.0, 3.0, 6.0, 11.0, 13.0, 18.0, 23.0, 30.0]),
                                values={}, t0=0.0,
                                noise={"concentration": NoiseSpec(a=0.0, b=0.05)})
    obs = simulate_experiments(truth, [design], ["concentration"], seed=2)
    problem = FitProblem(get("pk-oral", ka=1.1, ke=0.2, V=20.0), obs,
                         SolverSettings(rtol=1e-7, atol=1e-9))
    ev = problem.residuals_and_jacobian()
    assert ev.J.shape == (problem.n_residuals, 3)
    assert problem.n_residuals == 2 * problem.n_data  # data + ln-sigma terms
    np.testing.assert_allclose(ev.J, _fd_jacobian(problem, 1e-5), rtol=1e-4, atol=1e-5)
    assert torch.isfinite(torch.as_tensor(ev.r)).all()
