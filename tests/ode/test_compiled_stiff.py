"""compile=True runs the Rosenbrock methods as compiled whole-solve loops: the same steps
and outputs as the eager solver (to round-off: the compiled stage solves multiply by the
inverse, the eager ones use the LU factors), and the same discrete ACA gradient as direct
backpropagation through the eager solver. The mass-action Jacobian is the closed-form hook
of :class:`systems.kinetics.ReactionNetwork`, also in the rebuilt steps of the reverse
sweep (with the parameters substituted)."""

from __future__ import annotations

import pytest
import torch

import physode
import systems
from physode.ode.compiled_loop import CompiledLoop
from systems.kinetics import ReactionNetwork


@pytest.fixture
def loop_calls(monkeypatch):
    """Counts compiled forward-loop calls, so a test fails if solve() stops using them."""
    calls = []
    real = CompiledLoop.forward

    def spy(self, *args, **kwargs):
        calls.append(self.method.name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CompiledLoop, "forward", spy)
    return calls


def _solve(system, t, method, compile_, gradient="aca"):
    y0 = system.y0.clone().requires_grad_(True)
    sol = physode.solve(system, y0, t, method=method, rtol=1e-7, atol=1e-10,
                        gradient=gradient, compile=compile_)
    weights = torch.linspace(1.0, 2.0, sol.ys[0].numel()).reshape(sol.ys[0].shape)
    loss = (sol.ys * weights).sum() + sol.ys[-1].square().sum()
    grads = torch.autograd.grad(loss, [y0, *system.parameters()])
    return sol, grads


def _compare(system, t, method, loop_calls):
    eager, _ = _solve(system, t, method, False)
    direct = _solve(system, t, method, False, gradient="direct")[1]
    whole, g_whole = _solve(system, t, method, True)
    assert loop_calls == [method], "compile=True did not run the compiled loop"
    assert whole.stats == eager.stats  # the same steps, accepted and rejected
    assert torch.allclose(whole.ys, eager.ys, rtol=1e-10, atol=1e-14)
    for i, (a, b) in enumerate(zip(g_whole, direct)):  # y0, then each rate constant
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13), i


def _enzyme() -> ReactionNetwork:
    """Michaelis-Menten with fast binding: stiff on [0, 5]."""
    return ReactionNetwork(["kon, koff: E + S <=> C", "kcat: C -> E + P"],
                           {"kon": 1e3, "koff": 1e2, "kcat": 5.0},
                           y0={"S": 1.0, "E": 0.05})


def test_rosenbrock23_compiled_equals_eager_and_direct(loop_calls):
    _compare(_enzyme(), torch.linspace(0.0, 5.0, 11), "rosenbrock23", loop_calls)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rodas4", "rodas5p"])
def test_rodas_compiled_equals_eager_and_direct(method, loop_calls):
    _compare(_enzyme(), torch.linspace(0.0, 5.0, 11), method, loop_calls)


@pytest.mark.slow
def test_robertson_compiled_equals_eager(loop_calls):
    system = systems.get("robertson")
    t = torch.tensor([0.0, 1e-3, 0.1, 1.0, 10.0, 40.0])
    _compare(system, t, "rodas4", loop_calls)


class VanDerPol(torch.nn.Module):
    """Forced Van der Pol, mu = 50: no Jacobian hook and non-autonomous, so the compiled
    step takes J by torch.func.jacrev and df/dt by torch.func.jvp."""

    def __init__(self) -> None:
        super().__init__()
        self.mu = torch.nn.Parameter(torch.tensor(50.0))

    def forward(self, t, y):
        return torch.stack([y[1], self.mu * (1 - y[0] ** 2) * y[1] - y[0]
                            + 0.1 * torch.sin(t)])


@pytest.mark.slow
def test_autograd_jacobian_inside_the_compiled_loop(loop_calls):
    field, t = VanDerPol(), torch.linspace(0.0, 2.0, 9)
    results = []
    for compile_ in (False, True):
        y0 = torch.tensor([2.0, 0.0], requires_grad=True)
        sol = physode.solve(field, y0, t, method="rosenbrock23", rtol=1e-7, atol=1e-9,
                            compile=compile_)
        results.append((sol, torch.autograd.grad(sol.ys.sum(), [y0, field.mu])))
    (eager, g_eager), (whole, g_whole) = results
    assert loop_calls == ["rosenbrock23"]
    assert whole.stats == eager.stats
    assert torch.allclose(whole.ys, eager.ys, rtol=1e-10, atol=1e-13)
    for a, b in zip(g_whole, g_eager):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("method", ["rosenbrock23", "rodas5p"])
def test_a_step_rebuilt_with_its_inverse_equals_the_step(method, monkeypatch):
    """``step_reusing`` with the inverse of the step's matrix: the same step, and the same
    derivatives (the inverse's derivative ``-X dA X`` attached to the given value), so
    ACA's reverse sweep may rebuild a forward step without inverting again."""
    from physode.ode.methods import get_method
    from physode.ode.methods.jacobian import linearize

    m = get_method(method)
    net = _enzyme()
    t, h = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.02, dtype=torch.float64)
    y = net.y0.detach() + torch.tensor([0.0, 0.01, 0.02, 0.03], dtype=torch.float64)
    scale = 1.0 / (h * (m.d if method == "rosenbrock23" else m.tableau.gamma))
    J = linearize(net, t, y).J
    X = torch.linalg.inv(scale * torch.eye(J.shape[-1], dtype=J.dtype) - J)

    def plain(y_):
        s = m.step(net, t, h, y_, net(t, y_))
        return s.y1, s.err

    def reusing(y_):
        s = m.step_reusing(net, t, h, y_, net(t, y_), X)
        return s.y1, s.err

    (a1, ae), pull_a = torch.func.vjp(plain, y)
    (b1, be), pull_b = torch.func.vjp(reusing, y)
    assert torch.allclose(a1, b1, rtol=1e-12, atol=1e-15)
    assert torch.allclose(ae, be, rtol=1e-9, atol=1e-15)
    cot = (torch.linspace(1.0, 2.0, 4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
    ga, gb = pull_a(cot)[0], pull_b(cot)[0]
    assert torch.allclose(ga, gb, rtol=1e-10, atol=1e-12)
    # the attached derivative matters: with the inverse as a constant the gradient differs
    import physode.ode.methods.jacobian as jacobian

    monkeypatch.setattr(jacobian, "known_inverse", lambda X_, A: X_)
    gc = torch.func.vjp(reusing, y)[1](cot)[0]
    assert not torch.allclose(ga, gc, rtol=1e-6)


def _forward_records(monkeypatch):
    """The compiled forward records the reverse sweeps get."""
    seen = []
    real = CompiledLoop.backward

    def spy(self, func, names, params, fw, grad_ys):
        seen.append(fw)
        return real(self, func, names, params, fw, grad_ys)

    monkeypatch.setattr(CompiledLoop, "backward", spy)
    return seen


def test_the_reverse_sweep_gets_the_forward_steps_inverses(loop_calls, monkeypatch):
    """The compiled forward keeps each accepted step's inverse of ``I / (h d) - J``, and
    the reverse sweep that rebuilds the steps with them gives the direct gradient."""
    seen = _forward_records(monkeypatch)
    _compare(_enzyme(), torch.linspace(0.0, 5.0, 11), "rosenbrock23", loop_calls)
    (fw,) = seen
    chunk = fw.chunks[0]
    assert chunk.x.shape == (chunk.t.shape[0], 1, 4, 4)
    net = _enzyme()
    from physode.ode.methods.jacobian import linearize
    from physode.ode.methods.rosenbrock import ROSENBROCK23

    for i in (0, chunk.n // 2, chunk.n - 1):
        J = linearize(net, chunk.t[i], chunk.y[i]).J[0]
        A = torch.eye(4, dtype=J.dtype) / (chunk.h[i] * ROSENBROCK23.d) - J
        assert torch.allclose(chunk.x[i, 0] @ A, torch.eye(4, dtype=J.dtype), atol=1e-9)


@pytest.mark.slow
def test_past_the_factor_budget_the_reverse_sweep_inverts_again(loop_calls, monkeypatch):
    """With no memory for factors the forward keeps none, and the reverse sweep's own
    inverses give the same gradient."""
    import physode.ode.loop_buffers as buffers

    monkeypatch.setattr(buffers, "FACTOR_BYTES", 0)
    seen = _forward_records(monkeypatch)
    _compare(_enzyme(), torch.linspace(0.0, 5.0, 11), "rosenbrock23", loop_calls)
    assert all(c.x.shape[0] == 0 for c in seen[0].chunks)


def test_networks_run_the_loops_with_one_explicit_parameter_vector(monkeypatch):
    """A mass-action network is solved in the compiled loops as its explicit-parameter
    form (one vector of rate constants, not one tensor per rate), and the gradient still
    reaches every rate's own parameter, equal to direct backpropagation."""
    from physode.model.neural import NeuralTerm
    from physode.ode.explicit_field import ExplicitField, explicit_form

    seen, calls = [], []
    real = CompiledLoop.forward

    def spy(self, func, *args, **kwargs):
        seen.append(func)
        calls.append(self.method.name)
        return real(self, func, *args, **kwargs)

    monkeypatch.setattr(CompiledLoop, "forward", spy)
    net = _enzyme()
    _compare(net, torch.linspace(0.0, 5.0, 11), "rosenbrock23", calls)
    assert seen and all(isinstance(f, ExplicitField) for f in seen)
    field, p = explicit_form(net)
    assert torch.equal(field.p.detach(), p.detach())
    assert torch.allclose(p, net.rate_constants())
    grads = torch.autograd.grad(p.sum(), list(net.parameters()), allow_unused=True)
    assert sum(g is not None for g in grads) == 3  # one per rate, through p
    other = _enzyme()
    other.add_term(NeuralTerm(other, ["concentration"], hidden=(4,)))
    assert explicit_form(other) is None  # not pure mass action: the module itself


@pytest.mark.slow
def test_a_large_network_compiled_aca_equals_direct(loop_calls):
    """20 species (field and Jacobian from the non-zeros) through the compiled loops with
    RODAS5P: the eager solver's steps, and its gradient to the round-off that the chain's
    conditioning amplifies. The compiled stages multiply by a 20 x 20 inverse where the
    eager ones use LU factors: the outputs differ by up to 7e-12 relative, the gradient of
    y0 by 1.4e-8 (the same with the network's own module in the loops); a missing chain
    rule from the rate vector to a rate's parameter would be an O(1) error."""
    from tests.systems.test_kinetics_jacobian import _large_network

    t = torch.linspace(0.0, 2.0, 9)
    eager, g_eager = _solve(_large_network(), t, "rodas5p", False)
    direct = _solve(_large_network(), t, "rodas5p", False, gradient="direct")[1]
    whole, g_whole = _solve(_large_network(), t, "rodas5p", True)
    assert loop_calls == ["rodas5p"]
    assert whole.stats == eager.stats
    assert torch.allclose(whole.ys, eager.ys, rtol=1e-10, atol=1e-13)
    for i, (a, b, c) in enumerate(zip(g_whole, direct, g_eager)):
        assert torch.allclose(c, b, rtol=1e-12, atol=1e-15), i  # eager ACA = direct
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-12), i


@pytest.mark.filterwarnings("error::UserWarning")  # a fallback to per-step would warn
def test_rows_of_experiments_keep_their_own_jacobians_in_the_explicit_form(loop_calls):
    """Two experiments solved together as rows ``(2, n)``: the explicit form declares the
    network's ``state_size``, so each row keeps its own ``n x n`` Jacobian in the loop
    (without it the rows were one coupled system, the compile failed and the solve fell
    back to per-step compilation)."""
    net = _enzyme()
    y0 = torch.stack([net.y0.detach(), net.y0.detach() * 0.5]).requires_grad_(True)
    t = torch.linspace(0.0, 5.0, 11)
    grads = []
    for compile_ in (False, True):
        sol = physode.solve(net, y0, t, method="rosenbrock23", rtol=1e-7, atol=1e-10,
                            compile=compile_)
        grads.append(torch.autograd.grad(sol.ys.square().sum(), [y0, *net.parameters()]))
    assert loop_calls == ["rosenbrock23"]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-13)
