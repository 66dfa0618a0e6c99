"""``optimizer="auto"`` (issue 19, item 6): LM for least squares with up to a few hundred
unknowns, L-BFGS for neural terms and very many unknowns; the report says which and why."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import physode
from physode import Parameter, StateVar, System
from physode.errors import InvalidArgument
from physode.estimate.choice import LM_MAX_UNKNOWNS, choose_optimizer
from physode.estimate.settings import fit_settings

FAST = {"progress": False, "compile": False, "rtol": 1e-9, "atol": 1e-11}


@pytest.mark.parametrize(("args", "expected", "why"), [
    ((21, 0, 500), "lm", "21 unknowns"),
    ((LM_MAX_UNKNOWNS, 0, 10_000), "lm", "Levenberg-Marquardt"),
    ((LM_MAX_UNKNOWNS + 1, 0, 10_000), "lbfgs", "more than"),
    ((2, 1000, 500), "lbfgs", "learnable weights"),
    ((5, 0, 3), "lbfgs", "fewer data"),
])
def test_choice_rules(args, expected, why):
    chosen, reason = choose_optimizer(*args)
    assert chosen == expected and why in reason and reason.startswith("auto: ")


def test_lm_needs_a_tolerance_to_stop():
    assert choose_optimizer(2, 0, 100, (0.0, 0.0, 0.0))[0] == "lbfgs"


def test_settings_accept_auto_and_the_named_optimisers():
    assert fit_settings().optimizer == "auto"
    for name in ("lbfgs", "adam", "lm"):
        assert fit_settings(optimizer=name).optimizer == name
    with pytest.raises(InvalidArgument, match="unknown optimizer 'bfgs'"):
        fit_settings(optimizer="bfgs")


class Decay(System):
    k = Parameter(0.5, positive=True)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 1.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": -self.k * s["y"]}


class Tiny(torch.nn.Module):
    """A learned correction with 3 weights."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))

    def forward(self, t, state):
        y = state["y"]
        return {"y": self.w[0] * y + self.w[1] * y**2 + self.w[2]}


@pytest.fixture(scope="module")
def decay_obs():
    return physode.simulate(Decay(k=0.8), np.linspace(0, 3, 15), noise=0.01, seed=0)


def test_default_fit_is_lm_and_the_report_says_why(decay_obs):
    res = physode.fit(Decay(), decay_obs, **FAST)
    assert res.optimizer == "lm" and res.settings.max_iter == 100
    assert "lm (auto: least squares with 1 unknown" in res.report()
    assert res.to_xarray().attrs["optimizer_reason"] == res.settings.optimizer_reason
    assert res.params["k"] == pytest.approx(0.8, rel=0.02)


def test_auto_picks_lbfgs_with_a_learnable_term(decay_obs):
    system = Decay()
    system.add_term(Tiny())
    res = physode.fit(system, decay_obs, max_iter=3, **FAST)
    assert res.optimizer == "lbfgs" and res.settings.max_iter == 3
    assert "3 learnable weights" in res.settings.optimizer_reason
    assert "lbfgs (auto: 3 learnable weights" in res.report()


def test_an_explicit_optimizer_has_no_reason(decay_obs):
    res = physode.fit(Decay(), decay_obs, optimizer="lbfgs", max_iter=3, **FAST)
    assert res.optimizer == "lbfgs" and res.settings.optimizer_reason == ""
