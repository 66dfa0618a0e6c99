"""Learnable parts: NeuralTerm corrections and gradients through odeint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import systems
from physode.errors import InvalidSystem
from physode.model.neural import NeuralTerm
from physode.model.system import StateVar, System
from systems.kinetics import ReactionNetwork

F64 = torch.float64


def test_neural_term_adds_its_output_to_the_named_derivatives():
    lv = systems.get("lotka-volterra")
    t = torch.tensor(0.5, dtype=F64)
    y = torch.rand(7, 2, dtype=F64) + 0.1
    physics = lv(t, y).detach()
    term = lv.add_term(NeuralTerm(lv, inputs=["concentration"], hidden=(8,), time_input=True))
    expected = physics + term.net(torch.cat([y, t.expand(7, 1)], dim=-1))
    torch.testing.assert_close(lv(t, y), expected, rtol=1e-14, atol=1e-14)
    # learnable weights are parameters of the system, separate from the free vector
    names = {n for n, _ in lv.named_parameters()}
    assert {"terms.neuralterm.net.0.weight", "terms.neuralterm.net.2.bias"} <= names
    assert len(lv.learnable_parameters()) == 4 and lv.free_names() == ["alpha", "beta", "gamma"]


def test_zero_init_starts_at_the_known_physics():
    p = systems.get("pendulum")
    p.add_term(NeuralTerm(p, inputs=["theta", "omega"], outputs=["omega"], zero_init=True))
    y = torch.randn(3, 2, dtype=F64)
    bare = systems.get("pendulum")
    torch.testing.assert_close(p(torch.tensor(0.0), y), bare(torch.tensor(0.0), y))


def test_input_and_output_scale_bring_physical_magnitudes_to_order_one():
    """The network sees state / input_scale (per input component) and its output is
    multiplied by output_scale, as the UDE Lotka-Volterra example relies on."""
    lv = systems.get("lotka-volterra")
    term = NeuralTerm(lv, inputs=["concentration"], hidden=(4,), input_scale=(3.0, 1.5),
                      output_scale=5.0)
    y = torch.rand(6, 2, dtype=F64) * 4
    out = term(torch.tensor(0.0), {"concentration": y})["concentration"]
    scale = torch.tensor([3.0, 1.5], dtype=F64)
    torch.testing.assert_close(out, 5.0 * term.net(y / scale), rtol=1e-14, atol=1e-14)


def test_outputs_keep_variable_shapes_in_a_batch():
    nb = systems.get("figure-eight")
    term = NeuralTerm(
        nb,
        inputs=["position"],
        outputs=["velocity"],
        hidden=(4,),
        input_scale=[1.0, 2.0, 1.0, 2.0, 1.0, 2.0],
    )
    state = nb.unpack(torch.randn(5, 3, nb.state_size, dtype=F64))
    out = term(torch.tensor(0.0), state)
    assert set(out) == {"velocity"} and out["velocity"].shape == (5, 3, 3, 2)


def test_neural_weights_receive_gradients_through_odeint():
    """A universal differential equation: Lotka-Volterra's linear terms as reactions, the
    interaction learned; a loss on the solution gives non-zero gradients to every weight and
    to the rate constants."""
    from physode.ode.solve import odeint

    torch.manual_seed(0)
    ude = ReactionNetwork(
        ["alpha: x -> 2 x", "gamma: y -> "], {"alpha": 1.5, "gamma": 3.0}, y0={"x": 1.0, "y": 1.0}
    )
    ude.add_term(NeuralTerm(ude, inputs=["concentration"], hidden=(8, 8)))
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    for gradient in ("direct", "aca"):
        ude.zero_grad()
        ys = odeint(ude, ude.y0, t, method="dopri5", rtol=1e-8, atol=1e-10, gradient=gradient)
        loss = ys.square().sum()
        loss.backward()
        for name, p in ude.named_parameters():
            assert p.grad is not None, (gradient, name)
            assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, (gradient, name)
        if gradient == "direct":
            reference = {n: p.grad.clone() for n, p in ude.named_parameters()}
        else:
            for n, p in ude.named_parameters():
                torch.testing.assert_close(p.grad, reference[n], rtol=1e-8, atol=1e-12)


def test_any_module_inside_a_system_is_learnable():
    class Damped(System):
        state_vars = (StateVar("x"), StateVar("v"))

        def __init__(self):
            super().__init__()
            self.friction = nn.Linear(1, 1, dtype=F64)

        def vector_field(self, t, s):
            return {"x": s["v"], "v": -s["x"] - self.friction(s["v"].unsqueeze(-1)).squeeze(-1)}

    d = Damped()
    d(torch.tensor(0.0), torch.ones(4, 2, dtype=F64)).sum().backward()
    assert d.friction.weight.grad is not None and d.learnable_parameters() == list(
        d.friction.parameters()
    )


def test_bad_neural_terms():
    lv = systems.get("lotka-volterra")
    with pytest.raises(InvalidSystem, match="input 'prey' is not a state variable.*concentration"):
        NeuralTerm(lv, inputs=["prey"])
    with pytest.raises(InvalidSystem, match="activation"):
        NeuralTerm(lv, inputs=["concentration"], activation="swish2")
    with pytest.raises(InvalidSystem, match="input_scale has 3 values for 2 inputs"):
        NeuralTerm(lv, inputs=["concentration"], input_scale=[1.0, 2.0, 3.0])

    class Wrong(nn.Module):
        def forward(self, t, state):
            return {"nope": state["concentration"]}

    lv.add_term(Wrong())
    with pytest.raises(InvalidSystem, match="correction for 'nope'"):
        lv(torch.tensor(0.0), lv.y0)
    with pytest.raises(InvalidSystem, match="torch.nn.Module"):
        lv.add_term(lambda t, s: s)
