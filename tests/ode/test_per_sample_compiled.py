"""per_sample=True with compile=True: the compiled loops take the eager batched loop's steps
and give its outputs and its (exact, ACA) gradients, over several checkpoint chunks."""

from __future__ import annotations

import pytest
import torch
from test_per_sample import Y0, C, Damped, K
from torch._dynamo.utils import counters

import physode
from physode.ode.compiled_batch import CHUNK, BatchLoop

TOL = {"rtol": 1e-8, "atol": 1e-10}


@pytest.fixture
def loop_calls(monkeypatch):
    """Counts compiled per-sample forward calls, so a test fails if solve() bypasses them."""
    calls = []
    real = BatchLoop.forward

    def spy(self, *args, **kwargs):
        calls.append(self.method.name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(BatchLoop, "forward", spy)
    return calls


def _solve(field, t, compile_):
    y0 = Y0.clone().requires_grad_(True)
    tt = t.clone().requires_grad_(True)
    sol = physode.solve(field, y0, tt, per_sample=True, compile=compile_, **TOL)
    loss = (sol.ys[..., 0] * torch.cos(2 * t)).sum() + sol.ys[-1, :, 1].square().sum()
    return sol, torch.autograd.grad(loss, [y0, tt, field.k, field.c])


def _compare(field, t, loop_calls):
    eager, g_eager = _solve(field, t, False)
    whole, g_whole = _solve(field, t, True)
    assert loop_calls == ["dopri5"], "compile=True did not run the compiled per-sample loop"
    assert whole.stats.samples == eager.stats.samples  # the same steps, sample by sample
    assert torch.allclose(whole.ys, eager.ys, rtol=1e-11, atol=1e-13)
    for name, a, b in zip(["y0", "t", "k", "c"], g_whole, g_eager):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), name
    return eager


@pytest.mark.slow
def test_compiled_per_sample_equals_eager_over_chunks_and_time_grids(loop_calls):
    """Per-sample grids (one backwards in time); the stiff sample needs several chunks of
    checkpoints while the others finish in the first: per-sample counts in the buffers."""
    field = Damped(K, C)
    t = torch.stack([torch.linspace(0, 3, 9), torch.linspace(0.5, 1.0, 9),
                     torch.linspace(6.0, -1.0, 9), torch.linspace(0, 6, 9) ** 1.5], 1)
    eager = _compare(field, t, loop_calls)
    counts = [s.accepted for s in eager.stats.samples]
    assert max(counts) > 2 * CHUNK and min(counts) < CHUNK
    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        field.k.mul_(1.1)  # new parameter values, as an optimiser step makes them
    loop_calls.clear()
    _compare(field, t, loop_calls)
    assert counters["stats"]["unique_graphs"] == graphs, "a new parameter value recompiled"


@pytest.mark.slow
def test_compiled_per_sample_errors_name_the_sample():
    t = torch.linspace(0, 3, 5)
    with pytest.raises(physode.MaxStepsExceeded, match="sample 2 of the batch") as whole:
        physode.odeint(Damped(K, C), Y0, t, per_sample=True, compile=True,
                       options={"max_steps": 100}, **TOL)
    with pytest.raises(physode.MaxStepsExceeded) as eager:
        physode.odeint(Damped(K, C), Y0, t, per_sample=True, options={"max_steps": 100},
                       **TOL)
    assert whole.value.t == pytest.approx(eager.value.t, rel=1e-9)
