"""Staggered forward sensitivities in fits (physode.estimate.staggered): mass action in
closed form against autograd, the staggered residual Jacobian against the augmented one,
and the cases that must keep the augmented path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import physode
from physode.estimate.problem import FitProblem
from physode.estimate.settings import SolverSettings
from systems.kinetics import ReactionNetwork
from systems.mass_action import MassActionForms
from systems.sparse_kinetics import SparseMassAction

D = torch.float64


def _network() -> ReactionNetwork:
    # orders 0 to 3, a reversible pair and a dimerisation
    return ReactionNetwork(["k1, k2: A + B <=> C", "k3: 2 C -> D", "k4: A + B + C -> E",
                            "k5: E -> A", "k6: -> B"],
                           [2.0, 0.5, 1.5, 0.3, 0.7, 0.1], y0={"A": 1.0, "B": 0.6})


def _pairwise(J: torch.Tensor) -> torch.Tensor:
    """The per-row blocks of a jacobian over a batch, ``(B, ..., B, ...)`` -> ``(B, ...)``."""
    return torch.stack([J[b, :, b] for b in range(J.shape[0])])


@pytest.mark.parametrize("sparse", [False, True])
def test_mass_action_closed_forms_match_autograd(sparse):
    """Dense products, and the assembly from the stoichiometry's non-zeros that networks
    of ``SPARSE_FROM`` species and more use (forced here on a small one)."""
    net = _network()
    field = net.sensitivity_model().field
    if sparse:
        field = MassActionForms(net.stoichiometry, net._react_idx,
                                SparseMassAction(net._stoich_int, net._react_idx))
    gen = torch.Generator().manual_seed(0)
    B, n = 3, len(net.species)
    x = torch.rand(B, n, dtype=D, generator=gen)
    x[0, 1] = 0.0  # a zero concentration: products, not powers
    k = torch.rand(B, 6, dtype=D, generator=gen) + 0.1
    t = torch.zeros(B, dtype=D)
    with torch.no_grad():
        net.set_params(**{f"k{i + 1}": float(k[0, i]) for i in range(6)})
        assert torch.allclose(field.rhs(t, x, k)[0], net(t[0], x[0]), rtol=1e-14, atol=1e-15)
    J = _pairwise(torch.func.jacrev(lambda c: field.rhs(t, c, k))(x))
    assert torch.allclose(field.jacobian(t, x, k), J, rtol=1e-13, atol=1e-15)
    F = _pairwise(torch.func.jacrev(lambda kk: field.rhs(t, x, kk))(k))
    assert torch.allclose(field.param_jacobian(t, x, k), F, rtol=1e-13, atol=1e-15)
    u = torch.randn(4, B, n, dtype=D, generator=gen)
    for fn, dirs in ((field.jacobian, field.jacobian_dir),
                     (field.param_jacobian, field.param_jacobian_dir)):
        expected = torch.stack([torch.func.jvp(lambda c, fn=fn: fn(t, c, k), (x,), (u[i],))[1]
                                for i in range(4)])
        got = dirs(t, x, k, u)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, rtol=1e-13, atol=1e-14)
    assert net.sensitivity_model() is net.sensitivity_model()  # one field: kernels cached


def _problem(net: ReactionNetwork, method: str = "rodas4", **solver) -> FitProblem:
    y0 = np.array([[1.0, 0.6, 0.0, 0.0, 0.0], [0.5, 1.0, 0.2, 0.0, 0.0]])
    t = np.linspace(0.1, 5.0, 12)
    obs = physode.simulate(net, t, y0=y0, t0=0.0, noise=1e-3, seed=3)
    settings = SolverSettings(method, rtol=solver.pop("rtol", 1e-10),
                              atol=solver.pop("atol", 1e-13), options=solver or None)
    return FitProblem(net, obs, settings)


@pytest.mark.parametrize("method", ["rodas4", "rodas5p"])
def test_staggered_jacobian_equals_the_augmented_one(method, staggered_calls):
    net = _network()
    net.set_params(k1=2.6, k4=1.1)  # away from the truth: non-zero residuals
    problem = _problem(net, method)
    assert problem.staggered is not None
    assert len(problem.groups) == 1 and len(problem.groups[0].exps) == 2  # one batched solve
    fast = problem.residuals_and_jacobian()
    assert staggered_calls, "the staggered path did not run"
    states = problem.predict()
    problem.staggered = None
    slow = problem.residuals_and_jacobian()
    plain = problem.predict()
    scale = np.abs(slow.J).max()
    assert np.abs(fast.J - slow.J).max() < 1e-6 * scale
    assert np.abs(fast.r - slow.r).max() < 1e-6 * np.abs(slow.r).max()
    for a, b in zip(states, plain):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-11)
    # the sensitivity of every fitted rate is there: no column is zero
    assert (np.abs(fast.J).max(axis=0) > 0).all()


def test_staggered_fit_recovers_the_rates():
    truth = _network()
    obs = physode.simulate(truth, np.linspace(0.1, 5.0, 15), t0=0.0, noise=1e-4, seed=1,
                           y0=np.array([[1.0, 0.6, 0.0, 0.0, 0.0], [0.5, 1.0, 0.2, 0.0, 0.0]]))
    net = _network()
    net.set_params(k1=3.0, k2=0.35, k3=2.0, k4=0.2, k5=1.0, k6=0.07)
    res = physode.fit(net, obs, method="rodas4", rtol=1e-8, atol=1e-11, optimizer="lm",
                      progress=False, compile=False)
    assert res.convergence.status == "converged"
    for label, value, err in zip(res.labels, res.values, res.errors):
        true = float(truth.params[label].detach())
        assert abs(value - true) < 4 * err, (label, value, true, err)
        assert err < 0.2 * true, (label, err)


class _Leak(torch.nn.Module):
    """A first-order loss of every species, added to the mass action: no longer pure."""

    def forward(self, t, state):
        return {"concentration": -0.05 * state["concentration"]}


@pytest.mark.parametrize("case", ["rosenbrock23", "tstops", "term"])
def test_augmented_path_where_staggered_does_not_apply(case):
    net = _network()
    if case == "term":
        net.add_term(_Leak(), name="leak")
    kwargs = {"tstops": [1.0]} if case == "tstops" else {}
    problem = _problem(net, "rosenbrock23" if case == "rosenbrock23" else "rodas4", **kwargs)
    assert problem.staggered is None


def test_auto_compiles_lm_on_the_staggered_loop_at_a_lower_break_even(monkeypatch):
    """compile='auto' weighs the staggered loop's cheap build (seconds) for LM fits of
    mass-action networks, but keeps the minutes-long bar of the augmented stiff loops."""
    import time

    from physode.estimate import fit as fit_module
    from physode.estimate.settings import fit_settings

    settings = fit_settings(method="rodas5p", optimizer="lm", max_iter=50)
    eager_s = 0.6  # one plain solve: 0.6 s x 3 x 15 evaluations = 27 s > 20 s
    problem = _problem(_network(), "rodas5p")
    clock = iter(float(i) * eager_s for i in range(100))  # each probe reads it twice
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(problem, "residuals", lambda: None)
    assert fit_module._use_compile(problem, settings)
    problem.staggered = None  # the augmented path: 0.6 s x 49 x 15 = 441 s < 600 s
    assert not fit_module._use_compile(problem, settings)
