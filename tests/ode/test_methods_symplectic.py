"""Symplectic integrators (leapfrog, yoshida4): order, bounded energy error on the
figure-eight orbit, the position/velocity split, and ACA == direct."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import physode
from physode.ode.methods import METHODS
from physode.ode.methods.symplectic import SYMPLECTIC_METHODS

# ---------------------------------------------------------------- convergence order
# A separable, non-autonomous problem whose drift is not plain v: q' = K2 v,
# v' = -sin q + 0.3 cos t (undamped driven pendulum with a velocity scale).
T = 4.0
K2 = 1.5
STEPS = {"leapfrog": [32, 64, 128, 256], "yoshida4": [16, 32, 64, 128]}


def driven(t, y):
    return torch.stack([K2 * y[..., 1], -torch.sin(y[..., 0]) + 0.3 * torch.cos(t)], -1)


driven.position_velocity_split = 1


@pytest.fixture(scope="module")
def reference():
    def rhs(t, y):
        return [K2 * y[1], -np.sin(y[0]) + 0.3 * np.cos(t)]

    return solve_ivp(rhs, (0, T), [1.0, 0.0], method="DOP853", rtol=3e-14, atol=1e-14,
                     dense_output=True).sol


def _slope(ns, errs):
    return np.polyfit(np.log(ns), -np.log(errs), 1)[0]


def test_every_symplectic_method_has_an_order_test():
    assert set(STEPS) == set(SYMPLECTIC_METHODS)


@pytest.mark.parametrize("method", sorted(STEPS))
def test_convergence_order(method, reference):
    m = METHODS[method]
    errs, dense_errs = [], []
    y0 = torch.tensor([1.0, 0.0])
    for n in STEPS[method]:
        h = T / n
        y_end = physode.odeint(driven, y0, torch.tensor([0.0, T]), method=method,
                               options={"step_size": h})[-1]
        errs.append(np.abs(y_end.numpy() - reference(T)).max())
        tm = torch.tensor([0.0] + [(i + 0.37) * h for i in range(n)])
        yd = physode.odeint(driven, y0, tm, method=method,
                            options={"step_size": h, "step_to_outputs": False})
        dense_errs.append(np.abs(yd.numpy() - reference(tm.numpy()).T).max())
    assert abs(_slope(STEPS[method], errs) - m.order) <= 0.3, (method, errs)
    expected_dense = min(m.order, m.dense_order + 1)
    assert abs(_slope(STEPS[method], dense_errs) - expected_dense) <= 0.3, dense_errs


@pytest.mark.parametrize("method", sorted(STEPS))
def test_time_reversible(method):
    """Both compositions are symmetric: stepping back from y(T) with -h returns to y0."""
    y0 = torch.tensor([1.0, 0.3])
    t = torch.linspace(0.0, 2.0, 5)
    y_end = physode.odeint(driven, y0, t, method=method, options={"step_size": 0.1})[-1]
    back = physode.odeint(driven, y_end, t.flip(0), method=method,
                          options={"step_size": 0.1})[-1]
    assert torch.allclose(back, y0, atol=1e-12)


# ---------------------------------------------------------------- figure-eight energy
R1 = [0.97000436, -0.24308753]
V3 = [-0.93240737, -0.86473146]


def gravity(t, y):
    """Three unit masses in the plane, G = 1; y = (r1, r2, r3, v1, v2, v3)."""
    pos = y[..., :6].reshape(*y.shape[:-1], 3, 2)
    d = pos[..., None, :, :] - pos[..., :, None, :]
    r3 = (d.square().sum(-1) + torch.eye(3, dtype=y.dtype)) ** 1.5
    acc = (d / r3[..., None]).sum(-2)
    return torch.cat([y[..., 6:], acc.reshape(*y.shape[:-1], 6)], -1)


gravity.position_velocity_split = 6


def figure_eight_y0():
    r1, v3 = torch.tensor(R1), torch.tensor(V3)
    return torch.cat([r1, -r1, torch.zeros(2), -v3 / 2, -v3 / 2, v3])


def energy(y: np.ndarray) -> np.ndarray:
    pos = y[:, :6].reshape(-1, 3, 2)
    kinetic = 0.5 * (y[:, 6:] ** 2).sum(-1)
    potential = sum(-1.0 / np.linalg.norm(pos[:, i] - pos[:, j], axis=-1)
                    for i in range(3) for j in range(i + 1, 3))
    return kinetic + potential


def energy_error_halves(method: str, n_steps: int, h: float) -> tuple[float, float]:
    """Max relative energy error over the first and the second half of ``n_steps``."""
    t = torch.linspace(0.0, n_steps * h, n_steps // 10 + 1)  # every 10th step
    ys = physode.odeint(gravity, figure_eight_y0(), t, method=method,
                        options={"step_size": h})
    E = energy(ys.numpy())
    rel = np.abs((E - E[0]) / E[0])
    half = len(rel) // 2
    return rel[1: half + 1].max(), rel[half:].max()


@pytest.mark.parametrize("method, bound", [("leapfrog", 2e-4), ("yoshida4", 3e-8)])
def test_figure_eight_energy_bounded(method, bound):
    first, second = energy_error_halves(method, 10_000, 0.01)
    assert second <= 1.5 * first, (first, second)
    assert max(first, second) < bound


@pytest.mark.slow
@pytest.mark.parametrize("method, bound", [("leapfrog", 2e-4), ("yoshida4", 3e-8)])
def test_figure_eight_energy_bounded_1e5_steps(method, bound):
    first, second = energy_error_halves(method, 100_000, 0.01)
    assert second <= 1.5 * first, (first, second)
    assert max(first, second) < bound


def test_drift_criterion_detects_a_non_symplectic_method():
    """The test above can fail: classical RK4 at the same cost drifts secularly."""
    first, second = energy_error_halves("rk4", 2_000, 0.04)
    assert second > 1.5 * first, (first, second)


# ---------------------------------------------------------------- declaring the split
def test_system_split_by_state_names():
    systems = pytest.importorskip("systems")
    system = systems.get("figure-eight")
    assert system.position_velocity_split == ("position", "velocity")
    y0 = system.y0.detach()
    t = torch.linspace(0.0, 6.32591398, 3)
    ys = physode.odeint(system, y0, t, method="yoshida4", options={"step_size": 0.005})
    assert torch.allclose(ys[-1], y0, atol=1e-4)  # one period: back to the start
    with torch.no_grad():
        ys_plain = physode.odeint(gravity, figure_eight_y0(), t, method="yoshida4",
                                  options={"step_size": 0.005})
    assert torch.allclose(ys.detach(), ys_plain, atol=1e-12)


def test_velocities_first_layout_gives_the_same_trajectory():
    def swapped(t, y):  # state (v, q)
        return driven(t, y.flip(-1)).flip(-1)

    swapped.position_velocity_split = (slice(1, 2), slice(0, 1))
    t = torch.linspace(0.0, 2.0, 3)
    a = physode.odeint(driven, torch.tensor([1.0, 0.3]), t, method="yoshida4",
                       options={"step_size": 0.1})
    b = physode.odeint(swapped, torch.tensor([0.3, 1.0]), t, method="yoshida4",
                       options={"step_size": 0.1})
    assert torch.equal(a, b.flip(-1))


def test_batch_dimensions():
    y0 = torch.stack([figure_eight_y0(), 1.01 * figure_eight_y0()])
    t = torch.linspace(0.0, 1.0, 3)
    batch = physode.odeint(gravity, y0, t, method="leapfrog", options={"step_size": 0.01})
    one = physode.odeint(gravity, y0[1], t, method="leapfrog", options={"step_size": 0.01})
    assert torch.allclose(batch[:, 1], one, atol=1e-14)


@pytest.mark.parametrize("method", sorted(SYMPLECTIC_METHODS))
def test_without_a_split_is_a_clear_error(method):
    with pytest.raises(physode.InvalidArgument, match="position_velocity_split"):
        physode.odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]),
                       method=method, options={"step_size": 0.1})


def test_damped_pendulum_declares_no_split():
    systems = pytest.importorskip("systems")
    system = systems.get("pendulum", damping=0.1)
    with pytest.raises(physode.InvalidArgument, match="declares no position_velocity_split"):
        physode.odeint(system, system.y0.detach(), torch.tensor([0.0, 1.0]),
                       method="leapfrog", options={"step_size": 0.1})


def test_malformed_split_is_a_clear_error():
    def f(t, y):
        return -y

    f.position_velocity_split = 5
    with pytest.raises(physode.InvalidArgument, match="disjoint parts that cover it"):
        physode.odeint(f, torch.ones(4), torch.tensor([0.0, 1.0]), method="leapfrog",
                       options={"step_size": 0.1})


# ---------------------------------------------------------------- gradients
def _three_body_grads(method, gradient, opts):
    masses = torch.tensor([1.0, 1.05, 0.95], requires_grad=True)
    y0 = figure_eight_y0().requires_grad_()

    def field(t, y):
        pos = y[:6].reshape(3, 2)
        d = pos[None, :, :] - pos[:, None, :]
        r3 = (d.square().sum(-1) + torch.eye(3)) ** 1.5
        acc = (masses[None, :, None] * d / r3[..., None]).sum(1)
        return torch.cat([y[6:], acc.reshape(6)])

    field.position_velocity_split = 6
    t = torch.linspace(0.0, 1.0, 17)
    ys = physode.odeint(field, y0, t, method=method, gradient=gradient, params=(masses,),
                        options=opts)
    torch.manual_seed(3)
    loss = (torch.randn(ys.shape) * ys).sum() + 0.5 * ys.square().sum()
    return torch.autograd.grad(loss, (y0, masses))


@pytest.mark.parametrize("opts", [{"step_size": 0.05},
                                  {"step_size": 0.03, "step_to_outputs": False}],
                         ids=["on-outputs", "dense"])
@pytest.mark.parametrize("method", sorted(SYMPLECTIC_METHODS))
def test_aca_equals_direct(method, opts):
    direct = _three_body_grads(method, "direct", opts)
    aca = _three_body_grads(method, "aca", opts)
    for g_d, g_a in zip(direct, aca):
        assert ((g_a - g_d).abs().max() / g_d.abs().max()).item() <= 1e-10


def test_gradcheck_leapfrog():
    k = torch.tensor(1.3, requires_grad=True)

    def f(y0, k_):
        def field(t, y):
            return torch.stack([y[1], -k_ * torch.sin(y[0])])

        field.position_velocity_split = 1
        return physode.odeint(field, y0, torch.tensor([0.0, 0.35, 1.0]), method="leapfrog",
                              params=(k_,), options={"step_size": 0.1,
                                                     "step_to_outputs": False})

    assert torch.autograd.gradcheck(f, (torch.tensor([0.3, -0.7], requires_grad=True), k))
