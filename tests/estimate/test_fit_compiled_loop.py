"""A Levenberg–Marquardt fit with compile=True runs its sensitivity field (vmap over jvp)
in the compiled whole-solve loop, whose checkpoints it carries instead of writing them in
place: in-place writes next to torch.func transforms fail inductor's functionalisation
and leave the process's forward-AD level entered (every later solve then fails)."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from decay_system import Decay

import physode
import systems
from physode.estimate.problem import FitProblem
from physode.estimate.sensitivity import SensitivityField
from physode.estimate.settings import SolverSettings
from physode.ode.compiled_loop import CompiledLoop

TOL = {"rtol": 1e-8, "atol": 1e-10}


def test_compiled_lm_fit_uses_the_loop_and_equals_eager(monkeypatch):
    obs = physode.simulate(Decay(k=0.8), np.linspace(0, 3, 12), noise=0.05, seed=3)
    fields = []
    real = CompiledLoop.forward

    def spy(self, func, *args, **kwargs):
        fields.append(type(func))
        return real(self, func, *args, **kwargs)

    monkeypatch.setattr(CompiledLoop, "forward", spy)
    eager = physode.fit(Decay(k=0.5), obs, optimizer="lm", progress=False, compile=False,
                        method="dopri5", **TOL)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*could not compile.*")
        fast = physode.fit(Decay(k=0.5), obs, optimizer="lm", progress=False, compile=True,
                           method="dopri5", **TOL)
    assert SensitivityField in fields, "the LM Jacobian did not run in the compiled loop"
    assert SensitivityField.function_transforms
    np.testing.assert_allclose(fast.values, eager.values, rtol=1e-7)
    # a plain solve afterwards still compiles and runs: no forward-AD level was leaked
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*could not compile.*")
        system = Decay(k=0.8)
        ys = physode.odeint(system, system.y0, torch.linspace(0, 3, 12, dtype=torch.float64),
                            method="dopri5", compile=True, **TOL)
    assert torch.allclose(ys[:, 0], 2.0 * torch.exp(-0.8 * torch.linspace(0, 3, 12,
                                                                         dtype=torch.float64)),
                          rtol=1e-6)


def test_compiled_per_sample_groups_equal_eager():
    """Experiments on their own time grids share one per-sample solve; compiled, its LM
    Jacobian (the sensitivity field's vmap(jvp): carried checkpoints) and its ACA gradient
    (the damped pendulum, whose position_velocity_split reads a parameter) run in the
    compiled loops and agree with the eager ones."""
    truth = systems.get("pendulum", length=1.2, damping=0.15)
    rng = np.random.default_rng(4)
    exps = []
    for k in range(3):
        t = np.linspace(0.0, 1.0 + rng.uniform(0, 2), 9)
        one = physode.simulate(truth, t, y0=[rng.uniform(0.2, 1.5), 0.0], noise=0.01,
                               seed=k, experiment_names=[f"p{k}"])
        exps += one.experiments
    obs = replace(one, experiments=exps)
    settings = SolverSettings(rtol=1e-7, atol=1e-9)
    eager = FitProblem(systems.get("pendulum"), obs, settings)
    fast = FitProblem(systems.get("pendulum"), obs, settings)
    assert [g.per_sample for g in fast.groups] == [True]
    fast.compile = True
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*could not compile.*")
        a = fast.residuals_and_jacobian()
        loss_a, grad_a, _ = fast.loss_and_grad()
    b = eager.residuals_and_jacobian()
    loss_b, grad_b, _ = eager.loss_and_grad()
    assert a.J is not None and b.J is not None
    np.testing.assert_allclose(a.r, b.r, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.J, b.J, rtol=0, atol=1e-8 * np.abs(b.J).max())
    assert loss_a == pytest.approx(loss_b, rel=1e-9)
    np.testing.assert_allclose(grad_a.numpy(), grad_b.numpy(), rtol=1e-7, atol=1e-12)
