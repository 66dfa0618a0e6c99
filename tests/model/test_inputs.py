"""Inputs u(t) from data: natural cubic spline, linear and piecewise constant, against
scipy/numpy; gradients in t and in the values; breakpoints; errors naming the input."""

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

import physode
from physode.errors import InvalidArgument

X = np.array([0.0, 0.5, 1.3, 2.0, 3.1])
V = np.stack([np.sin(X), np.cos(2 * X)], 1)
TQ = torch.tensor([-0.5, 0.0, 0.01, 0.5, 0.77, 1.3, 2.5, 3.1, 4.0], dtype=torch.float64)


def test_cubic_is_scipys_natural_spline_and_flat_outside():
    u = physode.Input(X, V, "cubic", name="feed")
    got = u(TQ).detach().numpy()
    inside = (TQ >= X[0]) & (TQ <= X[-1])
    ref = CubicSpline(X, V, bc_type="natural")(TQ.numpy())
    assert got.shape == (len(TQ), 2)
    np.testing.assert_allclose(got[inside.numpy()], ref[inside.numpy()], atol=1e-14)
    np.testing.assert_allclose(got[0], V[0], atol=1e-15)
    np.testing.assert_allclose(got[-1], V[-1], atol=1e-15)


def test_linear_and_constant():
    lin = physode.Input(X, V[:, 0], "linear")
    np.testing.assert_allclose(lin(TQ).detach().numpy(), np.interp(TQ.numpy(), X, V[:, 0]),
                               atol=1e-15)
    step = physode.Input(X, V[:, 0], "constant")
    # right-continuous steps: the value of the last knot at or before t
    want = [V[0, 0], V[0, 0], V[0, 0], V[1, 0], V[1, 0], V[2, 0], V[3, 0], V[4, 0], V[4, 0]]
    np.testing.assert_allclose(step(TQ).numpy(), want)
    assert lin(torch.tensor(0.77)).shape == ()  # a 0-d time inside a vector field


def test_gradients_in_time_and_values():
    t = torch.tensor(1.1, requires_grad=True)
    u = physode.Input(X, V[:, 0], "cubic")
    (du,) = torch.autograd.grad(u(t), t)
    assert abs(du.item() - CubicSpline(X, V[:, 0], bc_type="natural")(1.1, 1)) < 1e-12
    values = torch.nn.Parameter(torch.tensor(V[:, 0]))
    for kind in ("linear", "cubic", "constant"):
        fitted = physode.Input(X, values, kind)
        assert list(fitted.parameters()) == [values]
        assert torch.autograd.gradcheck(
            lambda v, kind=kind: physode.Input(X, v, kind)(TQ[1:-1]),
            (values.detach().clone().requires_grad_(),))


def test_breakpoints_are_the_knots():
    u = physode.Input(X, V, "linear")
    assert u.breakpoints.dtype == torch.float64
    np.testing.assert_array_equal(u.breakpoints.numpy(), X)


@pytest.mark.slow
def test_compiles_as_one_graph():
    u = physode.Input(X, V, "cubic")
    compiled = torch.compile(lambda t: 2 * u(t), fullgraph=True)
    t = torch.tensor(0.7)
    assert torch.allclose(compiled(t), 2 * u(t), atol=1e-14)


@pytest.mark.parametrize("t, values, kind, message", [
    ([0.0, 2.0, 1.0], [1.0, 2.0, 3.0], "linear", r"input 'feed': times are not increasing"),
    ([0.0, 1.0, 1.0], [1.0, 2.0, 3.0], "linear", r"input 'feed': duplicate time 1.0"),
    ([0.0, float("inf")], [1.0, 2.0], "linear", r"input 'feed': non-finite time inf"),
    ([0.0, 1.0], [1.0, float("nan")], "linear", r"input 'feed': non-finite value at knot 1"),
    ([0.0, 1.0, 2.0], [1.0, 2.0], "linear", r"input 'feed': values of shape \(2,\) do not "
                                            r"match 3 knots"),
    ([0.0, 1.0], [1.0, 2.0], "spline", r"input 'feed': unknown kind 'spline'"),
    ([0.0], [1.0], "cubic", r"input 'feed': kind 'cubic' needs at least 2 knots"),
])
def test_bad_inputs_are_clear_errors(t, values, kind, message):
    with pytest.raises(InvalidArgument, match=message):
        physode.Input(t, values, kind, name="feed")
