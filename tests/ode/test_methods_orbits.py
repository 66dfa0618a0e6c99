"""Adaptive solves of the figure-eight three-body orbit (Chenciner & Montgomery, Ann. Math.
152 (2000) 881-901; initial data of Simó, as quoted in the solver-core issue)."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import physode

PERIOD = 6.32591398
R1 = [0.97000436, -0.24308753]
V3 = [-0.93240737, -0.86473146]


def figure_eight_y0():
    r1 = np.array(R1)
    v3 = np.array(V3)
    pos = np.stack([r1, -r1, np.zeros(2)])
    vel = np.stack([-v3 / 2, -v3 / 2, v3])
    return np.concatenate([pos.ravel(), vel.ravel()])


def gravity_np(t, y):
    pos = y[:6].reshape(3, 2)
    d = pos[None, :, :] - pos[:, None, :]
    r3 = (np.sum(d**2, axis=-1) + np.eye(3)) ** 1.5
    acc = np.sum(d / r3[..., None], axis=1)
    return np.concatenate([y[6:], acc.ravel()])


def gravity(t, y):
    pos = y[..., :6].reshape(*y.shape[:-1], 3, 2)
    d = pos[..., None, :, :] - pos[..., :, None, :]
    r3 = (d.square().sum(-1) + torch.eye(3, dtype=y.dtype)) ** 1.5
    acc = (d / r3[..., None]).sum(-2)
    return torch.cat([y[..., 6:], acc.reshape(*y.shape[:-1], 6)], dim=-1)


@pytest.fixture(scope="module")
def reference():
    t = np.linspace(0, PERIOD, 50)
    sol = solve_ivp(gravity_np, (0, PERIOD), figure_eight_y0(), method="DOP853", rtol=1e-12,
                    atol=1e-12, t_eval=t)
    return t, sol.y.T


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dopri8"])
def test_figure_eight_returns_and_matches_scipy(method, reference):
    t_ref, y_ref = reference
    y0 = torch.tensor(figure_eight_y0())
    sol = physode.solve(gravity, y0, torch.tensor(t_ref), method=method, rtol=1e-10,
                        atol=1e-10)
    ys = sol.ys.numpy()
    # the published initial data carry 8 digits, so the orbit closes to ~1e-7
    assert np.abs(ys[-1] - ys[0]).max() < 1e-6
    assert np.abs(ys - y_ref).max() < 1e-7
    assert sol.stats.accepted > 10 and sol.stats.nfe > sol.stats.accepted


def test_stats_count_function_evaluations(reference):
    calls = {"n": 0}

    def counted(t, y):
        calls["n"] += 1
        return gravity(t, y)

    sol = physode.solve(counted, torch.tensor(figure_eight_y0()), torch.tensor([0.0, PERIOD]),
                        rtol=1e-8, atol=1e-8)
    assert sol.stats.nfe == calls["n"]
    assert sol.stats.steps == sol.stats.accepted + sol.stats.rejected
    # dopri5 is FSAL: six new evaluations per step, plus f(t0), plus the initial-step probe
    assert sol.stats.nfe == 6 * sol.stats.steps + 2
