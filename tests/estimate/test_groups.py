"""Experiments with their own observation times share one per-sample solve: equal to
separate solves; fields that do not act row-wise on a time per row, stiff methods and
dosing keep separate solves."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import physode
import systems
from physode import Parameter, StateVar, System
from physode.estimate import groups as groups_mod
from physode.estimate.groups import rowwise
from physode.estimate.problem import FitProblem
from physode.estimate.settings import SolverSettings


def _pendulums(n: int) -> physode.Observations:
    truth = systems.get("pendulum", length=1.2, damping=0.15)
    rng = np.random.default_rng(4)
    exps = []
    one = None
    for k in range(n):
        t = np.linspace(0.0, 1.0 + rng.uniform(0, 2), 9)
        one = physode.simulate(truth, t, y0=[rng.uniform(0.2, 1.5), 0.0], noise=0.01,
                               seed=k, experiment_names=[f"p{k}"], rtol=1e-9, atol=1e-11)
        exps += one.experiments
    assert one is not None
    return replace(one, experiments=exps)


def test_own_times_share_one_per_sample_solve_equal_to_separate_solves(monkeypatch) -> None:
    obs = _pendulums(5)
    settings = SolverSettings(rtol=1e-7, atol=1e-9)
    merged = FitProblem(systems.get("pendulum"), obs, settings)
    assert [(g.per_sample, tuple(g.grid.shape)) for g in merged.groups] == [(True, (9, 5))]
    monkeypatch.setattr(groups_mod, "_merge_per_sample", lambda g, s, y: g)
    separate = FitProblem(systems.get("pendulum"), obs, settings)
    assert len(separate.groups) == 5 and not any(g.per_sample for g in separate.groups)
    a, b = merged.residuals_and_jacobian(), separate.residuals_and_jacobian()
    assert a.J is not None and b.J is not None
    np.testing.assert_allclose(a.r, b.r, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.J, b.J, rtol=0, atol=1e-9 * np.abs(b.J).max())
    loss_a, grad_a, _ = merged.loss_and_grad()
    loss_b, grad_b, _ = separate.loss_and_grad()
    assert loss_a == pytest.approx(loss_b, rel=1e-10)
    np.testing.assert_allclose(grad_a.numpy(), grad_b.numpy(), rtol=1e-7, atol=1e-12)
    (ta, ya), (tb, yb) = merged.trajectories(30), separate.trajectories(30)
    for e in range(5):
        np.testing.assert_array_equal(ta[e], tb[e])
        np.testing.assert_allclose(ya[e], yb[e], rtol=0, atol=1e-10)


def test_stiff_methods_keep_separate_solves() -> None:
    prob = FitProblem(systems.get("pendulum"), _pendulums(3), SolverSettings(method="rodas4"))
    assert len(prob.groups) == 3 and not any(g.per_sample for g in prob.groups)


class Forced(System):
    """A vector state forced by sin(t): ``t * x`` with t of shape (B,) and x of (B, 2)
    broadcasts across the wrong axis when B == 2."""

    k = Parameter(1.0, positive=True)
    state_vars = (StateVar("x", shape=(2,), dims=("axis",)),)

    def vector_field(self, t, s):
        return {"x": -self.k * s["x"] + torch.sin(t)}


def test_a_field_that_is_not_rowwise_in_time_keeps_separate_solves() -> None:
    system = Forced(y0=[1.0, 0.5])
    assert not rowwise(system, torch.tensor([0.1, 0.7], dtype=torch.float64),
                       torch.ones(2, 2, dtype=torch.float64))
    assert rowwise(systems.get("pendulum"), torch.tensor([0.1, 0.7], dtype=torch.float64),
                   torch.ones(2, 2, dtype=torch.float64))
    obs = physode.simulate(system, [0.0, 0.5, 1.0], noise=0.01, seed=1)
    other = physode.simulate(system, [0.0, 0.8, 2.0], noise=0.01, seed=2,
                             experiment_names=["b"])
    both = replace(obs, experiments=obs.experiments + other.experiments)
    prob = FitProblem(Forced(y0=[1.0, 0.5]), both, SolverSettings())
    assert len(prob.groups) == 2 and not any(g.per_sample for g in prob.groups)
    # the data's own model fits (12 residuals of sigma 0.01; rows mixed: chi2 ~ 100)
    assert prob.chi2(prob.residuals().r) < 40.0
