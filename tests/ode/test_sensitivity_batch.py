"""Batched forward sensitivities (physode.ode.sensitivity_batch): states and sensitivities
against closed forms, breakpoints per sample, the forward-AD fallback against the closed
forms of the second-order blocks, and failed samples reported without spoiling the rest."""

from __future__ import annotations

import math

import pytest
import torch

from physode.errors import InvalidArgument
from physode.ode.sensitivity_batch import SensitivityField, solve_sensitivities

D = torch.float64


# x' = -k(t) x with k(t) = p0 (1 + p1 t): x = x0 exp(-p0 (t + p1 t^2 / 2))
def rhs(t, x, p):
    return -(p[..., 0] * (1 + p[..., 1] * t))[..., None] * x


def jac(t, x, p):
    return (-(p[..., 0] * (1 + p[..., 1] * t)) + 0 * x[..., 0])[..., None, None]


def pjac(t, x, p):
    k0, k1, xx = p[..., 0], p[..., 1], x[..., 0]
    return torch.stack([-(1 + k1 * t) * xx, -k0 * t * xx], dim=-1)[..., None, :]


def jac_dir(t, x, p, u):
    return (0 * u[..., 0] + 0 * x[..., 0])[..., None, None]


def pjac_dir(t, x, p, u):
    k0, k1, uu = p[..., 0], p[..., 1], u[..., 0]
    return torch.stack([-(1 + k1 * t) * uu, -k0 * t * uu], dim=-1)[..., None, :]


def dfdt(t, x, p):
    return -(p[..., 0] * p[..., 1])[..., None] * x


def jac_dt(t, x, p):
    return (-(p[..., 0] * p[..., 1]) + 0 * x[..., 0])[..., None, None]


def pjac_dt(t, x, p):
    k0, k1, xx = p[..., 0], p[..., 1], x[..., 0]
    return torch.stack([-k1 * xx, -k0 * xx], dim=-1)[..., None, :]


CLOSED = SensitivityField(rhs, jac, pjac, False, jac_dir, pjac_dir, dfdt, jac_dt, pjac_dt)
DUAL = SensitivityField(rhs, jac, pjac, False)


def closed_form(t, x0, k0, k1):
    e = torch.exp(-k0 * (t + k1 * t**2 / 2))
    return x0 * e, torch.stack([-x0 * e * (t + k1 * t**2 / 2), -x0 * e * k0 * t**2 / 2,
                                e], dim=-1)


def setup(B=3):
    p = torch.tensor([[0.5, 0.1], [2.0, 0.0], [0.05, 1.0]], dtype=D)[:B]
    x0 = torch.tensor([[1.0], [3.0], [0.2]], dtype=D)[:B]
    # theta = (k0, k1, x0): dp/dtheta picks the first two, dx0/dtheta the third
    dp = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=D).expand(B, 2, 3)
    s0 = torch.tensor([[0.0, 0.0, 1.0]], dtype=D).expand(B, 1, 3)
    return p, x0, dp, s0


@pytest.mark.parametrize("field", [CLOSED, DUAL], ids=["closed-form", "forward-AD"])
def test_states_and_sensitivities_match_the_closed_form(field):
    p, x0, dp, s0 = setup()
    times = torch.tensor([0.0, 0.5, 1.0, 2.5, 4.0], dtype=D)
    res = solve_sensitivities(field, x0, s0, p, dp, times, rtol=1e-9, atol=1e-12)
    assert bool(res.ok.all())
    for b in range(3):
        x, s = closed_form(times, x0[b, 0], p[b, 0], p[b, 1])
        torch.testing.assert_close(res.x[b, :, 0], x, rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(res.s[b, :, 0], s, rtol=1e-6, atol=1e-10)
    # every sample steps on its own: the slow decay needs fewer steps than the fast one
    assert int(res.steps[2]) < int(res.steps[1])


def test_tolerance_controls_the_error():
    p, x0, dp, s0 = setup()
    times = torch.tensor([0.0, 1.0, 3.0], dtype=D)
    errors = []
    for rtol in (1e-5, 1e-8):
        res = solve_sensitivities(CLOSED, x0, s0, p, dp, times, rtol=rtol, atol=rtol * 1e-3)
        x, s = closed_form(times, x0[0, 0], p[0, 0], p[0, 1])
        errors.append(float((res.s[0, :, 0] - s).abs().max()))
    assert errors[1] < errors[0] / 100  # RODAS4, order 4: a 1000x tighter tolerance


def test_breakpoints_per_sample_are_stepped_onto():
    # k jumps from p0 to 3 p0 at a time tb that differs per sample
    def rhs_b(t, x, p):
        k = torch.where(t < p[..., 1], p[..., 0], 3 * p[..., 0])
        return -k[..., None] * x

    def jac_b(t, x, p):
        k = torch.where(t < p[..., 1], p[..., 0], 3 * p[..., 0])
        return (-k + 0 * x[..., 0])[..., None, None]

    def pjac_b(t, x, p):
        c = torch.where(t < p[..., 1], torch.ones_like(p[..., 0]), 3 * torch.ones_like(p[..., 0]))
        return torch.stack([-c * x[..., 0], 0 * x[..., 0]], dim=-1)[..., None, :]

    field = SensitivityField(rhs_b, jac_b, pjac_b, False)
    p = torch.tensor([[0.7, 0.3], [0.7, 1.7]], dtype=D)
    x0 = torch.ones(2, 1, dtype=D)
    dp = torch.tensor([[[1.0], [0.0]]], dtype=D).expand(2, 2, 1)
    s0 = torch.zeros(2, 1, 1, dtype=D)
    times = torch.tensor([1.0, 2.0, 3.0], dtype=D)
    res = solve_sensitivities(field, x0, s0, p, dp, times, breaks=p[:, 1:], rtol=1e-10,
                              atol=1e-12)
    for b in range(2):
        k, tb = float(p[b, 0]), float(p[b, 1])
        tau = torch.where(times < tb, times, tb + 3 * (times - tb))  # k-weighted time / k
        torch.testing.assert_close(res.x[b, :, 0], torch.exp(-k * tau), rtol=1e-8, atol=0)
        torch.testing.assert_close(res.s[b, :, 0, 0], -tau * torch.exp(-k * tau), rtol=1e-7,
                                   atol=0)


def test_a_blow_up_fails_its_sample_only():
    def rhs_q(t, x, p):
        return p[..., :1] * x * x

    def jac_q(t, x, p):
        return (2 * p[..., :1] * x)[..., None]

    def pjac_q(t, x, p):
        return (x * x)[..., None]

    field = SensitivityField(rhs_q, jac_q, pjac_q, True)
    p = torch.tensor([[1.0], [0.1]], dtype=D)  # x = 1 / (1 - p t): blows up at t = 1 / p
    x0 = torch.ones(2, 1, dtype=D)
    res = solve_sensitivities(field, x0, torch.zeros(2, 1, 1, dtype=D), p,
                              torch.ones(2, 1, 1, dtype=D), torch.tensor([0.5, 2.0], dtype=D),
                              rtol=1e-8, atol=1e-10, max_steps=2000)
    assert res.ok.tolist() == [False, True]
    assert math.isnan(float(res.x[0, 1, 0]))
    assert float(res.x[0, 0, 0]) == pytest.approx(2.0, rel=1e-6)  # before the blow-up
    assert float(res.x[1, 1, 0]) == pytest.approx(1 / 0.8, rel=1e-7)
    assert float(res.s[1, 1, 0, 0]) == pytest.approx(2.0 / 0.8**2, rel=1e-6)  # t / (1-pt)^2


def test_bad_shapes_and_times_are_refused():
    p, x0, dp, s0 = setup()
    with pytest.raises(InvalidArgument, match="shapes"):
        solve_sensitivities(CLOSED, x0, s0[:, :, :2], p, dp, torch.tensor([1.0], dtype=D))
    with pytest.raises(InvalidArgument, match="increasing"):
        solve_sensitivities(CLOSED, x0, s0, p, dp, torch.tensor([2.0, 1.0], dtype=D))


@pytest.mark.slow  # compiles the model kernels (tens of seconds); run by `make test-slow`
def test_compiled_kernels_give_the_eager_result():
    p, x0, dp, s0 = setup()
    times = torch.tensor([0.0, 1.0, 3.0], dtype=D)
    eager = solve_sensitivities(CLOSED, x0, s0, p, dp, times, rtol=1e-8, atol=1e-11)
    compiled = solve_sensitivities(CLOSED, x0, s0, p, dp, times, rtol=1e-8, atol=1e-11,
                                   compile=True)
    torch.testing.assert_close(compiled.x, eager.x, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(compiled.s, eager.s, rtol=1e-12, atol=1e-14)
    assert compiled.steps.tolist() == eager.steps.tolist()
