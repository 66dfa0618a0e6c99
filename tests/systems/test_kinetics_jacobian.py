"""The closed-form mass-action Jacobian of ReactionNetwork: equal to autograd's, used by
the stiff solvers, withdrawn when the dynamics are not pure mass action, and kept (with
substituted parameters) by the functional field the compiled reverse sweep rebuilds."""

from __future__ import annotations

import torch

import systems
from physode.model.neural import NeuralTerm
from physode.ode.methods.jacobian import linearize
from physode.ode.substitute import substituted
from systems.kinetics import ReactionNetwork

T0 = torch.tensor(0.0)


def _network() -> ReactionNetwork:
    # orders 0, 1, 2 (2 B, and A + B) and a sink: every factor pattern of the product rule
    return ReactionNetwork(["k1: -> A", "k2: A -> B", "k3: 2 B -> C", "k4: A + B -> 2 C",
                            "k5: C ->"], [0.5, 2.0, 30.0, 4.0, 0.7], y0=[1.0, 0.2, 0.0])


def _autograd(system, y):
    return torch.func.vmap(torch.func.jacrev(lambda z: system(T0, z)))(y.reshape(-1, 3))


def test_closed_form_equals_autograd_also_at_zero_concentration():
    system = _network()
    y = torch.tensor([[1.0, 0.2, 0.0], [0.0, 0.0, 0.0], [0.3, 1.7, 2.0]])
    J = system.jacobian(T0, y)
    assert J.shape == (3, 3, 3)
    assert torch.allclose(J, _autograd(system, y), rtol=1e-14, atol=1e-14)
    assert torch.isfinite(J).all()
    assert system.autonomous is True


def test_stiff_solver_reads_the_hook():
    system = systems.get("robertson")
    y = torch.tensor([0.9, 1e-5, 0.1])
    lin = linearize(system, 0.0, y)
    assert lin.ft is None  # declared autonomous: no df/dt
    assert torch.allclose(lin.J[0], system.jacobian(T0, y), rtol=0, atol=0)


def test_no_hook_with_learnable_terms():
    system = _network()
    system.add_term(NeuralTerm(system, ["concentration"], hidden=(4,)))
    assert system.jacobian is None and system.autonomous is None


def test_substituted_field_keeps_the_hook_with_its_parameters():
    system = _network()
    names = tuple(n for n, _ in system.named_parameters())
    new = tuple(p.detach() + 0.3 for p in system.parameters())
    field = substituted(system, names, new)
    y = torch.tensor([0.4, 0.5, 0.6])
    expected = torch.func.jacrev(
        lambda z: torch.func.functional_call(system, dict(zip(names, new)), (T0, z)))(y)
    assert torch.allclose(field.jacobian(T0, y), expected, rtol=1e-14, atol=1e-14)
    assert not torch.allclose(field.jacobian(T0, y), system.jacobian(T0, y))
    assert field.state_size == 3 and field.autonomous is True


def _large_network() -> ReactionNetwork:
    """20 species: the factor patterns of ``_network`` repeated along a chain, so the field
    and Jacobian are assembled from the stoichiometry's non-zeros."""
    reactions = ["k0: -> X0"]
    for i in range(19):
        a, b = f"X{i}", f"X{i + 1}"
        kind = i % 3
        reactions.append(f"r{i}: {a} -> {b}" if kind == 0 else
                         f"r{i}: 2 {a} -> {b}" if kind == 1 else f"r{i}: {a} + X0 -> 2 {b}")
    reactions.append("out: X19 ->")
    rates = [0.5] + [1.0 + 0.1 * i for i in range(19)] + [0.7]
    return ReactionNetwork(reactions, rates, y0=[1.0] + [0.0] * 19)


def test_large_networks_assemble_field_and_jacobian_from_nonzeros():
    from systems.sparse_kinetics import SPARSE_FROM

    system = _large_network()
    assert len(system.species) >= SPARSE_FROM and system._sparse is not None
    y = torch.rand(3, 20, dtype=torch.float64)
    y[1] = 0.0  # zero concentration: the product rule keeps it finite
    dense_f = system.reaction_rates(y) @ system.stoichiometry.T
    assert torch.allclose(system(T0, y), dense_f, rtol=1e-14, atol=1e-14)
    J = system.jacobian(T0, y)
    auto = torch.func.vmap(torch.func.jacrev(lambda z: system(T0, z)))(y)
    assert torch.allclose(J, auto, rtol=1e-14, atol=1e-14)
    assert torch.allclose(J, system.stoichiometry @ system.rate_jacobian(y),
                          rtol=1e-14, atol=1e-14)
    assert "f_species" not in system.state_dict() and "_sparse.f_species" not in \
        system.state_dict()  # index lists are rebuilt from the reactions, never saved
