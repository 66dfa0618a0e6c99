"""Where the compiled forward loop writes its checkpoints (physode.ode.loop_buffers): in
place, except where a step runs torch.func transforms, which inductor cannot functionalise
next to in-place writes (torch 2.13: an internal assert that also leaves a forward-AD level
entered). Those loops carry their buffers, declared or found by a failed first compile."""

from __future__ import annotations

import warnings

import torch

import physode
import systems
from physode.estimate.sensitivity import SensitivityField
from physode.ode.loop_buffers import writes_in_place
from physode.ode.methods import get_method

D = torch.float64
NO_FALLBACK = ".*could not compile.*"


class Forced(torch.nn.Module):
    """A stiff, non-autonomous field without a declared Jacobian: RODAS differentiates it
    with jacrev and jvp inside the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(50.0, dtype=D))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([-self.k * (y[0] - torch.cos(t)), y[0] - y[1]])


class Directional(torch.nn.Module):
    """A rotation averaged over two directional derivatives by vmap over jvp, undeclared:
    the LM sensitivity field's pattern, whose failed in-place compile orphaned a
    forward-AD level."""

    def __init__(self) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(2.0, dtype=D))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        def rot(v: torch.Tensor) -> torch.Tensor:
            return torch.stack([v[1], -self.k * v[0]])

        dirs = torch.stack([y, 2 * y])
        out = torch.func.vmap(lambda d: torch.func.jvp(rot, (y,), (d,))[1])(dirs)
        return out.sum(0) / 3  # = rot(y), which is linear


def test_which_loops_write_in_place() -> None:
    rodas, dopri = get_method("rodas5p"), get_method("dopri5")
    network = systems.get("robertson")  # closed-form Jacobian, autonomous
    assert writes_in_place(rodas, network) and writes_in_place(dopri, network)
    assert not writes_in_place(rodas, Forced()) and writes_in_place(dopri, Forced())
    assert SensitivityField.function_transforms
    field = SensitivityField(network, {}, 0)
    assert not writes_in_place(dopri, field)


def _gradient(field: torch.nn.Module, method: str, compile_: bool):
    y0 = torch.tensor([1.0, 0.0], dtype=D)
    t = torch.linspace(0, 2, 11, dtype=D)
    field.zero_grad()
    ys = physode.odeint(field, y0, t, method=method, compile=compile_, rtol=1e-8,
                        atol=1e-10)
    (ys[:, 0] * torch.cos(t)).sum().backward()
    return ys.detach(), field.k.grad.clone()


def _compiled_equals_eager(field: torch.nn.Module, method: str, runs: int = 1) -> None:
    """Compiled solves (no fallback warning) agree with the eager one, gradient included."""
    eager = _gradient(field, method, False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=NO_FALLBACK)
        compiled = [_gradient(field, method, True) for _ in range(runs)]
    for ys, grad in compiled:
        assert torch.allclose(ys, eager[0], rtol=1e-10, atol=1e-12)
        assert torch.allclose(grad, eager[1], rtol=1e-8)


def test_stiff_non_autonomous_field_runs_in_the_loop() -> None:
    _compiled_equals_eager(Forced(), "rodas5p")


def test_undeclared_transforms_fall_back_to_carried_buffers() -> None:
    _compiled_equals_eager(Directional(), "dopri5", runs=2)  # the second: carried at once
    # the failed first compile left no forward-AD level behind
    _, tangent = torch.func.jvp(torch.sin, (torch.tensor(0.5, dtype=D),),
                                (torch.tensor(1.0, dtype=D),))
    assert torch.isclose(tangent, torch.cos(torch.tensor(0.5, dtype=D)))


def test_substituted_fields_read_declarations_when_asked() -> None:
    """A declaration that reads a parameter's value is not evaluated while a compiled
    graph substitutes the parameters, unless a method asks for it."""
    from physode.ode.substitute import substituted

    damped = systems.get("pendulum", damping=0.3)
    names = tuple(n for n, _ in damped.named_parameters())
    params = tuple(p.detach() for _, p in damped.named_parameters())

    class Raises(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(torch.tensor(1.0))

        @property
        def state_slice(self) -> None:
            raise RuntimeError("read")

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return -self.p * y

    field = substituted(Raises(), ("p",), (torch.tensor(2.0),))  # reads nothing yet
    assert torch.equal(field(torch.tensor(0.0), torch.ones(2)), -2 * torch.ones(2))
    assert substituted(damped, names, params).position_velocity_split is None
    undamped = systems.get("pendulum", damping=0.0)
    split = substituted(undamped, names, params).position_velocity_split
    assert split == ("theta", "omega")


def test_parameters_pack_into_one_vector_and_back_exactly():
    """The compiled reverse loop carries one packed gradient: the layout keeps shapes and
    dtypes, and values survive the round trip (the widest dtype holds them all)."""
    from physode.ode.loop_buffers import pack, unpack

    params = (torch.tensor(0.1, dtype=torch.float32), torch.arange(6.0).reshape(2, 3) / 7,
              torch.tensor([1e-300, 3.0], dtype=torch.float64))
    spec, flat = pack(params, torch.zeros(2, dtype=torch.float32))
    assert flat.dtype == torch.float64 and flat.shape == (1 + 6 + 2,)
    back = unpack(flat, spec)
    for a, b in zip(params, back):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    assert pack((), torch.zeros(3))[1].shape == (0,) and unpack(torch.zeros(0), ()) == ()
