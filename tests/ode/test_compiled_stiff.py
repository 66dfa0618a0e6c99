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
