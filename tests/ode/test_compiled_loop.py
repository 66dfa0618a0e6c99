"""compile=True runs the whole adaptive solve as compiled loops: same steps, same outputs,
the same discrete ACA gradient as the eager solver, and the eager solver's errors."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import physode
from physode.ode import compiled_loop, loop_buffers
from physode.ode.compiled_loop import CompiledLoop
from physode.ode.loop_buffers import MIN_ROWS, chunk_rows


class Damped(torch.nn.Module):
    """y'' = -k y - c y' + 0.1 sin t, learnable k and c (non-autonomous on purpose)."""

    def __init__(self, k: float = 2.0, c: float = 0.3) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k))
        self.c = torch.nn.Parameter(torch.tensor(c))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[1], -self.k * y[0] - self.c * y[1] + 0.1 * torch.sin(t)])


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


def _solve(field, t, compile_, gradient="aca", **kw):
    y0 = torch.tensor([1.0, 0.0], requires_grad=True)
    tt = t.clone().requires_grad_(True)
    sol = physode.solve(field, y0, tt, rtol=1e-8, atol=1e-10, gradient=gradient,
                        compile=compile_, **kw)
    loss = (sol.ys[:, 0] * torch.cos(2 * t)).sum() + sol.ys[-1, 1] ** 2
    grads = torch.autograd.grad(loss, [y0, tt, *field.parameters()], allow_unused=True)
    return sol, grads


def _compare(field, t, loop_calls, method="dopri5"):
    eager, g_eager = _solve(field, t, False, method=method)
    direct = _solve(field, t, False, gradient="direct", method=method)[1]
    whole, g_whole = _solve(field, t, True, method=method)
    assert loop_calls == [method], "compile=True did not run the compiled loop"
    assert whole.stats == eager.stats  # the same steps, accepted and rejected
    assert torch.allclose(whole.ys, eager.ys, rtol=1e-12, atol=1e-14)
    # ACA in compiled loops = eager ACA = direct backpropagation (y0 and parameters)
    for name, a, b, c in zip(["y0", "t", "k", "c"], g_whole, g_eager, direct):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13), name
        if name != "t":  # direct treats output times as constants
            assert torch.allclose(a, c, rtol=1e-10, atol=1e-13), name


def test_whole_solve_equals_eager_over_several_chunks(loop_calls, monkeypatch):
    monkeypatch.setattr(loop_buffers, "MAX_ROWS", MIN_ROWS)
    field = Damped()
    t = torch.linspace(0, 30, 25)
    sol, _ = _solve(field, t, False)
    assert sol.stats.accepted > 2 * MIN_ROWS  # three forward calls, three reverse chunks
    _compare(field, t, loop_calls)


def test_chunk_rows_fill_the_memory_budget():
    small = torch.zeros(2, dtype=torch.float64)
    assert chunk_rows(small, 7) == loop_buffers.MAX_ROWS
    large = torch.zeros(100_000, dtype=torch.float64)  # 7.2 MB a row: the minimum
    assert chunk_rows(large, 7) == MIN_ROWS
    mid = torch.zeros(500, dtype=torch.float64)  # 36 kB a row
    rows = chunk_rows(mid, 7)
    assert MIN_ROWS < rows < loop_buffers.MAX_ROWS
    assert rows * (2 + 9 * 500) * 8 <= loop_buffers.CHUNK_BYTES


def test_backwards_in_time_and_outputs_on_step_ends(loop_calls):
    field = Damped(k=3.0)
    _compare(field, torch.linspace(2.0, -1.0, 25), loop_calls)


def test_new_parameter_values_reuse_the_compiled_loops(loop_calls):
    field = Damped()
    t = torch.linspace(0, 3, 25)
    _solve(field, t, True)
    assert "dopri5" in compiled_loop._LOOPS
    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        field.k.add_(0.7)  # a new parameter value, as an optimiser step makes it
    loop_calls.clear()
    _compare(field, t, loop_calls)
    assert counters["stats"]["unique_graphs"] == graphs, "a new parameter value recompiled"


def test_errors_are_the_eager_solver_errors():
    field = Damped()
    t = torch.linspace(0, 30, 25)
    y0 = torch.tensor([1.0, 0.0])
    with pytest.raises(physode.MaxStepsExceeded) as eager:
        physode.odeint(field, y0, t, rtol=1e-8, atol=1e-10, options={"max_steps": 70})
    with pytest.raises(physode.MaxStepsExceeded) as whole:
        physode.odeint(field, y0, t, rtol=1e-8, atol=1e-10, options={"max_steps": 70},
                       compile=True)
    # the step sizes agree to round-off in the error estimate (a difference of nearly equal
    # stage combinations, summed in another order when h is a tensor), so the time does too
    assert whole.value.steps == eager.value.steps == 70
    assert whole.value.t == pytest.approx(eager.value.t, rel=1e-6)
    with pytest.raises(physode.NonFiniteState, match="initial state or derivative"):
        physode.odeint(field, torch.tensor([float("nan"), 0.0]), t, compile=True)


def test_custom_controllers_and_step_to_outputs_use_the_step_path(loop_calls):
    field = Damped()
    t = torch.linspace(0, 1, 5)
    y0 = torch.tensor([1.0, 0.0])
    a = physode.odeint(field, y0, t, compile=True, options={"step_to_outputs": True})
    b = physode.odeint(field, y0, t, options={"step_to_outputs": True})
    assert loop_calls == []
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["heun_euler", "bosh3", "tsit5"])
def test_every_adaptive_explicit_method_in_compiled_loops(method, loop_calls):
    _compare(Damped(), torch.linspace(0, 3, 25), loop_calls, method=method)
