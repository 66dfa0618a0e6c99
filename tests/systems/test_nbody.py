"""N-body gravity: vector field against NumPy, invariants, presets, conservation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import systems
from physode.errors import InvalidSystem
from physode.model.parameter import Parameter
from systems.nbody import FIGURE_EIGHT_PERIOD, NBody

F64 = torch.float64
T0 = torch.tensor(0.0, dtype=F64)


def numpy_nbody(r, v, m, G, eps, k2):
    """Pair-by-pair reference: dr_i = k2 v_i, dv_i = G sum_j m_j (r_j - r_i)/(d^2+eps^2)^1.5."""
    n = len(m)
    acc = np.zeros_like(r)
    for i in range(n):
        for j in range(n):
            if i != j:
                d = r[j] - r[i]
                acc[i] += G * m[j] * d / (d @ d + eps**2) ** 1.5
    return k2 * v, acc


def numpy_invariants(r, v, m, G, eps, k2):
    n = len(m)
    kin = 0.5 * k2 * sum(m[i] * v[i] @ v[i] for i in range(n))
    pot = -sum(
        G * m[i] * m[j] / np.sqrt((r[j] - r[i]) @ (r[j] - r[i]) + eps**2)
        for i in range(n)
        for j in range(i + 1, n)
    )
    p = sum(m[i] * v[i] for i in range(n))
    if r.shape[1] == 2:
        L = sum(m[i] * (r[i, 0] * v[i, 1] - r[i, 1] * v[i, 0]) for i in range(n))
    else:
        L = sum(m[i] * np.cross(r[i], v[i]) for i in range(n))
    return kin + pot, p, L


@pytest.mark.parametrize("n, dim, eps", [(2, 2, 0.0), (3, 3, 0.0), (5, 3, 0.1), (4, 2, 0.05)])
def test_vector_field_and_invariants_match_numpy(n, dim, eps):
    rng = np.random.default_rng(n * 10 + dim)
    m = rng.uniform(0.5, 2.0, n)
    G, k2 = rng.uniform(0.5, 2.0), rng.uniform(0.5, 3.0)
    system = NBody(m, dim=dim, G=G, softening=eps, velocity_scale=k2)
    for _ in range(5):
        r = rng.normal(size=(n, dim))
        v = rng.normal(size=(n, dim))
        y = system.pack({"position": torch.tensor(r), "velocity": torch.tensor(v)})
        dy = system.unpack(system(T0, y))
        dr, dv = numpy_nbody(r, v, m, G, eps, k2)
        np.testing.assert_allclose(dy["position"].detach().numpy(), dr, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(dy["velocity"].detach().numpy(), dv, rtol=1e-12, atol=1e-12)
        inv = {k: x.detach().numpy() for k, x in system.invariants(y).items()}
        E, p, L = numpy_invariants(r, v, m, G, eps, k2)
        np.testing.assert_allclose(inv["energy"], E, rtol=1e-12)
        np.testing.assert_allclose(inv["linear_momentum"], p, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(inv["angular_momentum"], L, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["three-body-paper", "figure-eight", "pythagorean"])
def test_batched_equals_looped(name):
    system = systems.get(name)
    rng = np.random.default_rng(1)
    y = system.y0 + torch.tensor(rng.normal(scale=0.3, size=(4, 3, system.state_size)))
    batched = system(T0, y)
    assert batched.shape == y.shape
    looped = torch.stack([torch.stack([system(T0, y[i, j]) for j in range(3)]) for i in range(4)])
    torch.testing.assert_close(batched, looped, rtol=1e-14, atol=1e-14)
    inv_b = system.invariants(y)
    for k, val in inv_b.items():
        looped_inv = torch.stack(
            [torch.stack([system.invariants(y[i, j])[k] for j in range(3)]) for i in range(4)]
        )
        torch.testing.assert_close(val, looped_inv, rtol=1e-14, atol=1e-14)


def test_three_body_paper_constants_and_initial_state():
    s = systems.get("three-body-paper")
    G, m_nd, r_nd, v_nd = 6.67408e-11, 1.989e30, 5.326e12, 30000.0
    t_nd = 0.51 * 79.91 * 365 * 24 * 3600
    assert s.G.item() == pytest.approx(G * t_nd * m_nd / (r_nd**2 * v_nd), rel=1e-15)
    assert s.velocity_scale.item() == pytest.approx(v_nd * t_nd / r_nd, rel=1e-15)
    assert s.G.item() == pytest.approx(0.2004843727, rel=1e-9)
    assert s.velocity_scale.item() == pytest.approx(7.239323869, rel=1e-9)
    assert s.masses.tolist() == pytest.approx([1.1, 1.1, 0.9])
    st = s.unpack(s.y0)
    assert st["position"].tolist() == [[0, 0.2, 0], [0.5, 0, 0.5], [0, 0, 0.5]]
    assert st["velocity"].tolist() == [[0, 0.1, 0], [0, 0, 0.1], [0.1, 0, 0]]
    assert s.t_span == (0.0, 1.0)
    assert s.free_names() == ["masses"]  # G, K2 and softening are known constants
    assert s.position_velocity_split == ("position", "velocity")
    assert s.state_vars[0].dims == ("body", "axis") and s.state_vars[0].coords["axis"] == (
        "x",
        "y",
        "z",
    )
    assert s.state_vars[0].units == "5.326e+12 m"


def test_preset_overrides_and_pythagorean_setup():
    s = systems.get("pythagorean", masses=[3.0, 4.0, 6.0], t_span=(0, 10))
    assert s.masses.tolist() == pytest.approx([3.0, 4.0, 6.0]) and s.t_span == (0.0, 10.0)
    p = systems.get("pythagorean")
    st = p.unpack(p.y0)
    assert st["position"].tolist() == [[1, 3], [-2, -1], [1, -1]]
    assert (st["velocity"] == 0).all()
    # Burrau's configuration: the sides opposite masses 3, 4, 5 have lengths 3, 4, 5.
    r = st["position"]
    assert torch.linalg.norm(r[1] - r[2]).item() == pytest.approx(3.0)
    assert torch.linalg.norm(r[0] - r[2]).item() == pytest.approx(4.0)
    assert torch.linalg.norm(r[0] - r[1]).item() == pytest.approx(5.0)
    with pytest.raises(InvalidSystem, match="'masses' is positive"):
        systems.get("figure-eight", masses=[1.0, -1.0, 1.0])


def test_gradient_to_masses_and_no_nan_from_self_interaction():
    s = systems.get("three-body-paper")
    dy = s(T0, s.y0.clone().requires_grad_(True))
    dy.square().sum().backward()
    g = s._raw["masses"].grad
    assert g is not None and torch.isfinite(g).all() and (g != 0).all()


def test_bad_nbody_inputs():
    with pytest.raises(InvalidSystem, match=r"shape \(3, 2\) or \(3, 3\)"):
        NBody([1, 1, 1], position=[[0, 0], [1, 1]])
    with pytest.raises(InvalidSystem, match="dim must be 2 or 3"):
        NBody([1, 1], dim=4)
    with pytest.raises(InvalidSystem, match="is positive"):
        NBody([1, 0], dim=2)
    with pytest.raises(InvalidSystem, match="'softening': bounds"):
        NBody([1, 1], dim=2, softening=-0.1)
    with pytest.raises(InvalidSystem, match="'softening': bounds"):
        systems.get("figure-eight", softening=-0.1)
    with pytest.raises(InvalidSystem, match="velocity shape"):
        NBody([1, 1], position=[[0, 0], [1, 1]], velocity=[[0, 0, 0], [1, 1, 1]])


def test_fitting_G_is_a_redeclaration():
    s = systems.get("figure-eight", G=Parameter(1.0, positive=True))
    assert s.free_names() == ["masses", "G"]


def test_figure_eight_conserves_energy_and_momentum_over_one_period():
    """Chenciner & Montgomery's orbit: energy to 1e-9 relative at rtol = atol = 1e-11, linear
    momentum (a linear invariant, kept exactly by every Runge-Kutta method) to round-off,
    and the orbit closes after one period."""
    from physode.ode.solve import odeint

    s = systems.get("figure-eight")
    t = torch.linspace(0.0, FIGURE_EIGHT_PERIOD, 41, dtype=F64)
    with torch.no_grad():
        ys = odeint(s, s.y0, t, method="dopri8", rtol=1e-11, atol=1e-11)
    inv = s.invariants(ys)
    E = inv["energy"]
    assert E[0].item() == pytest.approx(-1.2871, abs=1e-4)
    assert ((E - E[0]).abs() / E[0].abs()).max().item() < 1e-9
    assert inv["linear_momentum"].abs().max().item() < 1e-13
    L = inv["angular_momentum"]
    assert (L - L[0]).abs().max().item() < 1e-9
    assert (ys[-1] - ys[0]).abs().max().item() < 1e-6
