"""compile=True: one compiled graph per step, identical results, no recompiles per fit."""

import warnings

import pytest
import torch
from torch._dynamo.utils import counters

import physode
from physode.ode import compiled_loop
from physode.ode import solve as solve_module
from physode.ode.compile import CompiledMethod, compiled


class Damped(torch.nn.Module):
    """y'' = -k y - c y' as a first-order system, with learnable k and c."""

    def __init__(self, k=2.0, c=0.3):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k))
        self.c = torch.nn.Parameter(torch.tensor(c))

    def forward(self, t, y):
        return torch.stack([y[1], -self.k * y[0] - self.c * y[1] + 0.1 * torch.sin(t)])


def _grad(field, compile_, gradient="aca"):
    y0 = torch.tensor([1.0, 0.0])
    t = torch.linspace(0, 3, 25)
    ys = physode.odeint(field, y0, t, rtol=1e-8, atol=1e-10, gradient=gradient,
                        compile=compile_)
    loss = (ys[:, 0] - torch.cos(t)).square().sum()
    return ys.detach(), torch.autograd.grad(loss, list(field.parameters()))


def test_compiled_aca_equals_eager_direct_and_does_not_recompile_for_new_values():
    field = Damped()
    ys_e, g_e = _grad(field, False, "direct")
    ys_c, g_c = _grad(field, True)
    assert torch.allclose(ys_c, ys_e, rtol=1e-12, atol=1e-14)
    for a, b in zip(g_c, g_e):
        assert torch.allclose(a, b, rtol=1e-10, atol=0)
    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        field.k.add_(0.5)  # a new parameter value, as an optimiser step makes it
    _, g_new = _grad(field, True)
    assert counters["stats"]["unique_graphs"] == graphs, "parameter change recompiled"
    _, g_new_eager = _grad(field, False, "direct")
    for a, b in zip(g_new, g_new_eager):
        assert torch.allclose(a, b, rtol=1e-10, atol=0)


def test_uncompilable_field_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("backend says no")

    # neither the whole-solve loop nor the per-step graphs compile
    monkeypatch.setattr(compiled_loop, "loop_for", broken)
    monkeypatch.setattr(solve_module, "_NOT_LOOPABLE", set())
    method = compiled(physode.METHODS["tsit5"])
    monkeypatch.setattr(method, "_compiled", broken)
    monkeypatch.setattr(method, "_compiled_err", broken)
    monkeypatch.setattr(method, "_compiled_vjp", broken)
    monkeypatch.setattr(method, "_eager_ids", set())
    field = Damped()
    with pytest.warns(UserWarning, match="could not compile"):
        ys = physode.odeint(field, torch.tensor([1.0, 0.0]), torch.linspace(0, 1, 5),
                            method="tsit5", compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = physode.odeint(field, torch.tensor([1.0, 0.0]), torch.linspace(0, 1, 5),
                               method="tsit5", compile=True)
    eager = physode.odeint(field, torch.tensor([1.0, 0.0]), torch.linspace(0, 1, 5),
                           method="tsit5")
    # the gradient runs eagerly too, and equals the uncompiled one
    (g,) = torch.autograd.grad(again.sum(), field.k)
    (g_eager,) = torch.autograd.grad(eager.sum(), field.k)
    assert torch.allclose(g, g_eager, rtol=1e-12)
    assert torch.allclose(ys, eager, rtol=1e-13, atol=1e-15)
    assert torch.allclose(again, eager, rtol=1e-13, atol=1e-15)


def test_compiled_wrapper_is_cached_per_method():
    assert compiled(physode.METHODS["dopri5"]) is compiled(physode.METHODS["dopri5"])
    assert isinstance(compiled(physode.METHODS["dopri5"]), CompiledMethod)


@pytest.mark.parametrize("method, options", [
    ("rk4", {"step_size": 0.1, "step_to_outputs": False}),  # not FSAL: f1 in the fused VJP
    ("dopri8", None),  # extra dense stages: steps with outputs take the autograd path
])
def test_compiled_aca_with_dense_outputs_equals_direct(method, options):
    field = Damped()
    y0 = torch.tensor([1.0, 0.0], requires_grad=True)
    t = torch.linspace(0, 2, 41)

    def grads(gradient, compile_):
        ys = physode.odeint(field, y0, t, method=method, rtol=1e-8, atol=1e-10,
                            gradient=gradient, options=options, compile=compile_)
        return torch.autograd.grad((ys * torch.sin(3 * t)[:, None]).sum(),
                                   [y0, *field.parameters()])

    for a, b in zip(grads("aca", True), grads("direct", False)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
