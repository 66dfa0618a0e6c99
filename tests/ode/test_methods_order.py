"""Every method converges at its nominal order, and so does its dense output.

Problem: the driven damped pendulum y1' = y2, y2' = -sin y1 - 0.1 y2 + 0.3 cos t on [0, 4]
(nonlinear and non-autonomous, so every order condition and every node c_i matters),
reference from scipy's DOP853 at rtol = atol = 1e-14.
"""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import physode
from physode.ode.methods import METHODS
from physode.ode.methods.explicit import ExplicitRK
from physode.ode.methods.symplectic import SYMPLECTIC_METHODS

T = 4.0
Y0 = [1.0, 0.0]


def pendulum(t, y):
    return torch.stack([y[1], -torch.sin(y[0]) - 0.1 * y[1] + 0.3 * torch.cos(t)])


@pytest.fixture(scope="module")
def reference():
    def rhs(t, y):
        return [y[1], -np.sin(y[0]) - 0.1 * y[1] + 0.3 * np.cos(t)]

    return solve_ivp(rhs, (0, T), Y0, method="DOP853", rtol=3e-14, atol=1e-14,
                     dense_output=True).sol


# step counts chosen inside the asymptotic range and above round-off for each method
STEPS = {
    "euler": [64, 128, 256, 512], "midpoint": [32, 64, 128, 256], "rk4": [16, 32, 64, 128],
    "heun_euler": [32, 64, 128, 256], "bosh3": [16, 32, 64, 128],
    "dopri5": [16, 32, 64, 128], "tsit5": [16, 32, 64, 128], "dopri8": [6, 12, 24],
    "rosenbrock23": [32, 64, 128, 256], "rodas4": [16, 32, 64, 128],
    "rodas5p": [8, 16, 32, 64],
}
# the tableau data checks below apply to explicit RK tableaux (Rosenbrock: test_solvers_stiff)
TABLEAUX = sorted(name for name, m in METHODS.items() if isinstance(m, ExplicitRK))


def test_every_registered_method_has_an_order_test():
    # symplectic methods need a separable problem: tests/test_solvers_symplectic.py
    assert set(STEPS) | set(SYMPLECTIC_METHODS) == set(METHODS)


def _slope(ns, errs):
    return np.polyfit(np.log(ns), -np.log(errs), 1)[0]


@pytest.mark.parametrize("method", sorted(STEPS))
def test_convergence_order(method, reference):
    tab = METHODS[method]
    errs, dense_errs = [], []
    y0 = torch.tensor(Y0)
    for n in STEPS[method]:
        h = T / n
        y_end = physode.odeint(pendulum, y0, torch.tensor([0.0, T]), method=method,
                               options={"step_size": h})[-1]
        errs.append(np.abs(y_end.numpy() - reference(T)).max())
        # dense output strictly inside the steps (no landing on outputs)
        tm = torch.tensor([0.0] + [(i + 0.37) * h for i in range(n)])
        yd = physode.odeint(pendulum, y0, tm, method=method,
                            options={"step_size": h, "step_to_outputs": False})
        dense_errs.append(np.abs(yd.numpy() - reference(tm.numpy()).T).max())
    order = _slope(STEPS[method], errs)
    assert abs(order - tab.order) <= 0.3, (method, order, errs)
    expected_dense = min(tab.order, tab.dense_order + 1)
    dense_order = _slope(STEPS[method], dense_errs)
    assert abs(dense_order - expected_dense) <= 0.3, (method, dense_order, dense_errs)


@pytest.mark.parametrize("method", TABLEAUX)
def test_tableau_consistency(method):
    """Row sums of a equal c, weights sum to 1, error weights sum to 0, and the dense
    output at theta = 1 reproduces b (so the interpolant is continuous across steps)."""
    tab = METHODS[method].tableau
    for ci, row in zip(tab.c, tab.a):
        assert sum(row) == pytest.approx(ci, abs=1e-14)
    assert sum(tab.b) == pytest.approx(1.0, abs=1e-14)
    if tab.e is not None:
        assert sum(tab.e) == pytest.approx(0.0, abs=1e-13)
    b_at_1 = tab.P.sum(axis=1)
    np.testing.assert_allclose(b_at_1[: tab.stages], list(tab.b), atol=1e-13)
    np.testing.assert_allclose(b_at_1[tab.stages:], 0.0, atol=1e-12)


@pytest.mark.parametrize("method", ["heun_euler", "bosh3", "dopri5", "tsit5", "dopri8"])
def test_embedded_error_estimate_has_its_order(method, reference):
    """The embedded solution b - e converges at its order: its local error over one step
    shrinks like h^(order+1). For DOP853 ``e`` is the 5th-order estimate of the 8(5,3)
    pair (the combined norm scales like h^8, hence ``error_order = 7``)."""
    tab = METHODS[method]
    from physode.ode.methods.step import time_tensor

    y0 = torch.tensor(Y0)
    f0 = pendulum(time_tensor(0.0, y0), y0)
    hs = [0.2, 0.1, 0.05] if tab.error_order < 7 else [0.4, 0.2, 0.1]
    errs = []
    for h in hs:
        step = METHODS[method].step(pendulum, 0.0, h, y0, f0)
        y_emb = step.y1 - step.err
        errs.append(np.abs(y_emb.numpy() - reference(h)).max())
    p = _slope(1 / np.array(hs), errs)
    embedded_order = 5 if method == "dopri8" else tab.error_order
    assert abs(p - (embedded_order + 1)) <= 0.35, (method, p, errs)
