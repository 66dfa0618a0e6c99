"""A Levenberg–Marquardt fit with compile=True runs its sensitivity field (vmap over jvp)
in the compiled whole-solve loop, whose checkpoints it carries instead of writing them in
place: in-place writes next to torch.func transforms fail inductor's functionalisation
and leave the process's forward-AD level entered (every later solve then fails)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from decay_system import Decay

import physode
from physode.estimate.sensitivity import SensitivityField
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
