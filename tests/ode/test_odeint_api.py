"""odeint/solve as a drop-in for torchdiffeq.odeint: shapes, dtypes, directions, errors."""

import math

import pytest
import torch
import torchdiffeq

import physode
from physode import InvalidArgument, MaxStepsExceeded, NonFiniteState, StepSizeUnderflow


def decay_rotation(t, y):
    """y' = A y with A = [[-0.1, 1], [-1, -0.1]] on the last axis (any batch shape)."""
    return torch.stack([-0.1 * y[..., 0] + y[..., 1], -y[..., 0] - 0.1 * y[..., 1]], dim=-1)


def exact(t, y0):
    """Exact solution at the 1-D times ``t``: shape (len(t), *y0.shape)."""
    t = t.reshape(-1, *([1] * (y0.ndim - 1)))
    c, s, e = torch.cos(t), torch.sin(t), torch.exp(-0.1 * t)
    y = torch.stack([c * y0[..., 0] + s * y0[..., 1], -s * y0[..., 0] + c * y0[..., 1]], -1)
    return e[..., None] * y


@pytest.mark.parametrize("shape", [(2,), (4, 2), (3, 5, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_values_match_torchdiffeq(shape, dtype):
    torch.manual_seed(0)
    y0 = torch.randn(*shape, dtype=dtype)
    t = torch.linspace(0, 5, 7, dtype=dtype)
    ours = physode.odeint(decay_rotation, y0, t, rtol=1e-6, atol=1e-8)
    theirs = torchdiffeq.odeint(decay_rotation, y0, t, rtol=1e-6, atol=1e-8)
    assert ours.shape == theirs.shape == (7, *shape)
    assert ours.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 1e-6
    assert torch.allclose(ours, theirs, atol=tol)
    ref = exact(t.double(), y0.double()).to(dtype)
    assert torch.allclose(ours, ref, atol=tol)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dopri8", "bosh3"])
def test_forward_then_backward_returns_to_y0(method):
    y0 = torch.tensor([1.0, -0.5])
    t = torch.linspace(0, 3, 4)
    y_end = physode.odeint(decay_rotation, y0, t, method=method, rtol=1e-10, atol=1e-12)[-1]
    back = physode.odeint(decay_rotation, y_end, t.flip(0), method=method, rtol=1e-10,
                          atol=1e-12)
    assert torch.allclose(back[-1], y0, atol=1e-8)
    assert torch.allclose(back, exact(t.flip(0), y0), atol=1e-8)


def test_decreasing_times_match_exact_solution():
    y0 = torch.tensor([0.3, 2.0])
    t = torch.tensor([2.0, 1.5, 0.0, -1.0])
    ys = physode.odeint(decay_rotation, exact(torch.tensor([2.0]), y0)[0], t, rtol=1e-9, atol=1e-11)
    assert torch.allclose(ys, exact(t, y0), atol=1e-8)


def test_step_to_outputs_agrees_with_dense_output_and_lands_on_every_time():
    y0 = torch.tensor([1.0, 0.0])
    t = torch.linspace(0, 10, 1001)
    dense = physode.solve(decay_rotation, y0, t, rtol=1e-8, atol=1e-10)
    landed = physode.solve(decay_rotation, y0, t, rtol=1e-8, atol=1e-10,
                           options={"step_to_outputs": True})
    assert landed.stats.accepted >= 1000 > 5 * dense.stats.accepted
    assert torch.allclose(dense.ys, landed.ys, atol=1e-7)
    assert torch.allclose(dense.ys, exact(t, y0), atol=1e-7)


def test_thousand_outputs_do_not_force_thousand_steps():
    sol = physode.solve(decay_rotation, torch.tensor([1.0, 0.0]), torch.linspace(0, 10, 1000))
    assert sol.ys.shape == (1000, 2)
    assert sol.stats.accepted < 200


def test_fixed_step_returns_requested_times_exactly():
    t = torch.tensor([0.0, 0.123, 0.5, 1.0])
    ys = physode.odeint(decay_rotation, torch.tensor([1.0, 0.0]), t, method="rk4",
                        options={"step_size": 0.1})
    assert torch.allclose(ys, exact(t, torch.tensor([1.0, 0.0])), atol=1e-6)


def test_single_time_returns_y0():
    y0 = torch.tensor([1.0, 2.0])
    ys = physode.odeint(decay_rotation, y0, torch.tensor([0.5]))
    assert ys.shape == (1, 2) and torch.equal(ys[0], y0)


def test_per_component_tolerances():
    y0 = torch.tensor([1.0, 1e-6])
    ys = physode.odeint(decay_rotation, y0, torch.linspace(0, 1, 3),
                        rtol=torch.tensor([1e-6, 1e-8]), atol=torch.tensor([1e-8, 1e-14]))
    assert torch.allclose(ys, exact(torch.linspace(0, 1, 3), y0), atol=1e-7)


def test_direct_gradient_matches_central_differences():
    k = torch.tensor(0.7, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], requires_grad=True)

    def f(t, y):
        return torch.stack([y[1], -k * torch.sin(y[0])])

    def loss(y0_, k_):
        def g(t, y):
            return torch.stack([y[1], -k_ * torch.sin(y[0])])
        return physode.odeint(g, y0_, torch.linspace(0, 3, 5), rtol=1e-10, atol=1e-12,
                              gradient="direct").square().sum()

    L = physode.odeint(f, y0, torch.linspace(0, 3, 5), rtol=1e-10, atol=1e-12,
                       gradient="direct").square().sum()
    gk, gy = torch.autograd.grad(L, (k, y0))
    eps = 1e-6
    with torch.no_grad():
        fd_k = (loss(y0, k + eps) - loss(y0, k - eps)) / (2 * eps)
        fd_y = torch.stack([(loss(y0 + eps * e, k) - loss(y0 - eps * e, k)) / (2 * eps)
                            for e in torch.eye(2)])
    assert torch.allclose(gk, fd_k, rtol=1e-5)
    assert torch.allclose(gy, fd_y, rtol=1e-5)


# --- bad input ------------------------------------------------------------------------------

def test_unknown_method_lists_known_ones():
    with pytest.raises(InvalidArgument, match="dopri5.*tsit5|known methods"):
        physode.odeint(decay_rotation, torch.ones(2), torch.tensor([0.0, 1.0]), method="rk45")


@pytest.mark.parametrize("t, match", [
    (torch.zeros(2, 2), "1-D"),
    (torch.tensor([0.0, 1.0, 1.0]), r"t\[1\]"),
    (torch.tensor([0.0, 1.0, 0.5]), "strictly"),
])
def test_bad_times(t, match):
    with pytest.raises(InvalidArgument, match=match):
        physode.odeint(decay_rotation, torch.ones(2), t)


def test_integer_state_and_bad_tolerances_and_options():
    t = torch.tensor([0.0, 1.0])
    with pytest.raises(InvalidArgument, match="floating point"):
        physode.odeint(decay_rotation, torch.ones(2, dtype=torch.int64), t)
    with pytest.raises(InvalidArgument, match="rtol"):
        physode.odeint(decay_rotation, torch.ones(2), t, rtol=0.0)
    with pytest.raises(InvalidArgument, match="atol"):
        physode.odeint(decay_rotation, torch.ones(2), t, atol=-1.0)
    with pytest.raises(InvalidArgument, match="unknown option"):
        physode.odeint(decay_rotation, torch.ones(2), t, options={"stepsize": 0.1})
    with pytest.raises(InvalidArgument, match="gradient"):
        physode.odeint(decay_rotation, torch.ones(2), t, gradient="magic")


def test_max_steps_names_time_and_count():
    with pytest.raises(MaxStepsExceeded, match=r"maximum number of steps \(5\).*t="):
        physode.odeint(decay_rotation, torch.ones(2), torch.tensor([0.0, 100.0]),
                       options={"max_steps": 5})


def test_finite_time_blow_up_raises_underflow_with_time():
    # y' = y^2, y(0) = 1 blows up at t = 1
    with pytest.raises((StepSizeUnderflow, NonFiniteState)) as info:
        physode.odeint(lambda t, y: y**2, torch.ones(1), torch.tensor([0.0, 2.0]))
    assert info.value.t == pytest.approx(1.0, abs=1e-3)


def test_non_finite_initial_derivative():
    with pytest.raises(NonFiniteState, match="t=0"):
        physode.odeint(lambda t, y: y / 0.0, torch.ones(1), torch.tensor([0.0, 1.0]))


def test_fixed_step_nan_is_reported_with_its_time():
    def f(t, y):
        return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)

    # f is NaN from t = 0.6 on, so the Euler step 0.6 -> 0.7 is the first non-finite state
    with pytest.raises(NonFiniteState, match="t=0.7"):
        physode.odeint(f, torch.ones(1), torch.tensor([0.0, 1.0]), method="euler",
                       options={"step_size": 0.1})
