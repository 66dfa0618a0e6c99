"""The staggered sensitivity solve as one compiled loop (physode.ode.sensitivity_loop):
the same steps as the eager loop and the same states and sensitivities to round-off, with
outputs written in place, breakpoints (one on an output time) and a sample that fails
without spoiling the others. One compilation (~20 s) per method."""

from __future__ import annotations

import pytest
import torch

import systems
from physode.ode import sensitivity_loop
from physode.ode.sensitivity_batch import solve_sensitivities

D = torch.float64


@pytest.mark.parametrize("method", [pytest.param("rodas4", marks=pytest.mark.slow),
                                    "rodas5p"])  # one compilation each; the same code
def test_compiled_loop_takes_the_eager_steps(method, monkeypatch):
    model = systems.get("robertson").sensitivity_model()
    assert model is not None and model.field.closed_form
    k = model.parameters().detach()
    B = 3
    p = torch.stack([k, k * torch.tensor([1.5, 0.5, 2.0], dtype=D), k]).to(D)
    dp = torch.diag_embed(p)  # d k / d ln k
    x0 = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.0, 0.2], [1.0, 0.0, 0.0]], dtype=D)
    s0 = torch.zeros(B, 3, 3, dtype=D)
    times = torch.cat([torch.zeros(1, dtype=D), torch.logspace(-4, 3, 40, dtype=D)])
    breaks = torch.tensor([[1e-3, float(times[10])], [0.5, 2e3], [5.0, float("inf")]], dtype=D)
    kw = {"t0": 0.0, "breaks": breaks, "rtol": 1e-7, "atol": 1e-12, "method": method}
    eager = solve_sensitivities(model.field, x0, s0, p, dp, times, max_steps=2000, **kw)
    calls = []
    real = sensitivity_loop._compiled_chunk

    def counted():
        fn = real()
        return lambda *a: calls.append(1) or fn(*a)

    monkeypatch.setattr(sensitivity_loop, "_compiled_chunk", counted)
    compiled = solve_sensitivities(model.field, x0, s0, p, dp, times, max_steps=2000,
                                   compiled_loop=True, **kw)
    # one call, resumed after sample 0's breakpoint on an output time (times[10])
    assert len(calls) == 2
    assert torch.equal(compiled.ok, eager.ok) and bool(eager.ok.all())
    assert torch.equal(compiled.steps, eager.steps)
    assert torch.equal(compiled.rejected, eager.rejected)
    assert torch.allclose(compiled.x, eager.x, rtol=1e-10, atol=1e-18)
    scale = eager.s.abs().amax(dim=(1, 2), keepdim=True)
    assert ((compiled.s - eager.s).abs() <= 1e-10 * scale).all()
    # a step budget that the samples with the most steps exceed
    few = int(eager.steps.max()) - 1
    expected = (eager.steps <= few).tolist()
    assert any(expected) and not all(expected)
    short_e = solve_sensitivities(model.field, x0, s0, p, dp, times, max_steps=few, **kw)
    short_c = solve_sensitivities(model.field, x0, s0, p, dp, times, max_steps=few,
                                  compiled_loop=True, **kw)
    assert short_c.ok.tolist() == short_e.ok.tolist() == expected
    done = torch.tensor(expected)
    assert torch.allclose(short_c.x[done], eager.x[done], rtol=1e-10, atol=1e-18)
    assert torch.isnan(short_c.x[~done][:, -1]).all()


def test_a_loop_that_fails_to_compile_runs_eagerly_with_a_warning(monkeypatch):
    model = systems.get("robertson").sensitivity_model()
    k = model.parameters().detach()[None]
    x0 = torch.tensor([[1.0, 0.0, 0.0]], dtype=D)
    times = torch.logspace(-3, 1, 5, dtype=D)
    args = (model.field, x0, torch.zeros(1, 3, 3, dtype=D), k, torch.diag_embed(k), times)

    def broken(*a, **kw):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(sensitivity_loop, "_compiled_chunk", lambda: broken)
    monkeypatch.setattr("physode.ode.sensitivity_batch._UNCOMPILABLE", set())
    eager = solve_sensitivities(*args, t0=0.0)
    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        out = solve_sensitivities(*args, t0=0.0, compiled_loop=True)
    assert torch.equal(out.x, eager.x) and torch.equal(out.s, eager.s)


def test_h_u_per_stage_equals_h_u_from_all_directions(monkeypatch):
    """Large networks evaluate H u along each stage's u; small ones contract the n
    directions formed once per step. The same step either way (eager loop)."""
    from physode.ode import sensitivity_step

    model = systems.get("robertson").sensitivity_model()
    k = model.parameters().detach()
    p = torch.stack([k, 1.5 * k]).to(D)
    x0 = torch.tensor([[1.0, 0.0, 0.0], [0.7, 0.0, 0.3]], dtype=D)
    args = (model.field, x0, torch.zeros(2, 3, 3, dtype=D), p, torch.diag_embed(p),
            torch.logspace(-4, 3, 30, dtype=D))
    kw = {"t0": 0.0, "rtol": 1e-7, "atol": 1e-12, "method": "rodas5p"}
    directions = solve_sensitivities(*args, **kw)
    monkeypatch.setattr(sensitivity_step, "HU_PER_STAGE_ABOVE", 0)
    per_stage = solve_sensitivities(*args, **kw)
    assert torch.equal(per_stage.steps, directions.steps)
    assert torch.allclose(per_stage.x, directions.x, rtol=1e-12, atol=1e-20)
    scale = directions.s.abs().amax(dim=(1, 2), keepdim=True)
    assert ((per_stage.s - directions.s).abs() <= 1e-11 * scale).all()
