"""Pendulums: vector fields against NumPy, batching, energy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import systems
from systems.pendulum import STANDARD_GRAVITY

F64 = torch.float64


def numpy_pendulum(t, th, om, L, g, b, A, W):
    return om, -(g / L) * np.sin(th) - b * om + A * np.cos(W * t)


def numpy_double_pendulum(th, om, m1, m2, L1, L2, g):
    """Lagrange's equations M(theta) theta'' = f, solved as a linear system (independent of
    the closed form the implementation uses)."""
    t1, t2 = th
    w1, w2 = om
    d = t1 - t2
    M = np.array(
        [[(m1 + m2) * L1**2, m2 * L1 * L2 * np.cos(d)], [m2 * L1 * L2 * np.cos(d), m2 * L2**2]]
    )
    f = np.array(
        [
            -m2 * L1 * L2 * w2**2 * np.sin(d) - (m1 + m2) * g * L1 * np.sin(t1),
            m2 * L1 * L2 * w1**2 * np.sin(d) - m2 * g * L2 * np.sin(t2),
        ]
    )
    return om, np.linalg.solve(M, f)


def test_pendulum_matches_numpy_on_random_states():
    rng = np.random.default_rng(2)
    p = systems.get("pendulum", length=1.7, damping=0.3, drive_amplitude=1.2, drive_frequency=0.9)
    L, g, b, A, W = 1.7, STANDARD_GRAVITY, 0.3, 1.2, 0.9
    for _ in range(10):
        t = rng.uniform(0, 10)
        th, om = rng.uniform(-4, 4), rng.normal(scale=3)
        dy = p(torch.tensor(t, dtype=F64), torch.tensor([th, om], dtype=F64)).detach().numpy()
        np.testing.assert_allclose(
            dy, numpy_pendulum(t, th, om, L, g, b, A, W), rtol=1e-13, atol=1e-13
        )


def test_double_pendulum_matches_numpy_on_random_states():
    rng = np.random.default_rng(3)
    m1, m2, L1, L2 = 1.3, 0.7, 0.9, 1.4
    p = systems.get("double-pendulum", m1=m1, m2=m2, L1=L1, L2=L2)
    for _ in range(20):
        th, om = rng.uniform(-np.pi, np.pi, 2), rng.normal(scale=2, size=2)
        y = p.pack({"theta": torch.tensor(th), "omega": torch.tensor(om)})
        dy = p.unpack(p(torch.tensor(0.0, dtype=F64), y))
        ref_th, ref_om = numpy_double_pendulum(th, om, m1, m2, L1, L2, STANDARD_GRAVITY)
        np.testing.assert_allclose(dy["theta"].detach().numpy(), ref_th, rtol=1e-14)
        np.testing.assert_allclose(dy["omega"].detach().numpy(), ref_om, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("name", ["pendulum", "double-pendulum"])
def test_batched_equals_looped(name):
    p = systems.get(name)
    if name == "pendulum":
        p.set_params(damping=0.2, drive_amplitude=0.5)
    y = torch.randn(6, 2, p.state_size, dtype=F64)
    t = torch.tensor(1.3, dtype=F64)
    looped = torch.stack([torch.stack([p(t, y[i, j]) for j in range(2)]) for i in range(6)])
    torch.testing.assert_close(p(t, y), looped, rtol=1e-14, atol=1e-14)


def test_pendulum_declarations():
    p = systems.get("pendulum")
    assert p.state_vars[0].name == "theta" and p.state_vars[1].name == "omega"
    assert p.free_names() == ["length", "damping"]  # g and the drive are known
    specs = p.parameter_specs()
    assert specs["length"].units == "m" and specs["g"].fixed
    assert p.t_span == (0.0, 10.0) and p.y0.tolist() == [1.0, 0.0]
    assert p.position_velocity_split == ("theta", "omega")
    p.set_params(damping=0.1)
    assert p.position_velocity_split is None and p.invariants(p.y0) == {}
    d = systems.get("double-pendulum")
    assert d.free_names() == ["m2", "L1", "L2"]
    assert d.state_vars[0].shape == (2,) and d.state_vars[0].dims == ("link",)


@pytest.mark.parametrize("name", ["pendulum", "double-pendulum"])
def test_energy_conserved_when_undamped(name):
    from physode.ode.solve import odeint

    p = systems.get(name)
    t = torch.linspace(0.0, 5.0, 11, dtype=F64)
    with torch.no_grad():
        ys = odeint(p, p.y0, t, method="dopri5", rtol=1e-10, atol=1e-10)
    E = p.invariants(ys)["energy"]
    scale = max(E.abs().max().item(), 1.0)
    assert (E - E[0]).abs().max().item() < 1e-7 * scale


def test_energy_formula_matches_numpy():
    d = systems.get("double-pendulum", m2=0.5, L2=0.8)
    th, om = np.array([0.3, -1.1]), np.array([0.7, 2.0])
    m1, m2, L1, L2, g = 1.0, 0.5, 1.0, 0.8, STANDARD_GRAVITY
    # positions of the two bobs, and their velocities, in Cartesian coordinates
    v1 = L1 * om[0] * np.array([np.cos(th[0]), np.sin(th[0])])
    v2 = v1 + L2 * om[1] * np.array([np.cos(th[1]), np.sin(th[1])])
    y1, y2 = -L1 * np.cos(th[0]), -L1 * np.cos(th[0]) - L2 * np.cos(th[1])
    E = 0.5 * m1 * v1 @ v1 + 0.5 * m2 * v2 @ v2 + m1 * g * y1 + m2 * g * y2
    y = d.pack({"theta": torch.tensor(th), "omega": torch.tensor(om)})
    assert d.energy(y).item() == pytest.approx(E, rel=1e-13)
