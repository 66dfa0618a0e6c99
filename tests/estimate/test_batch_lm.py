"""Batched, bound-constrained Levenberg–Marquardt (physode.estimate.batch_lm): each start
reaches its own optimum, bounds hold and active bounds are reported as converged, failed
evaluations are handled per start, and the optimum equals scipy's least_squares."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch

from physode.estimate.batch_lm import batch_least_squares

D = torch.float64


def rosenbrock(x):
    r = torch.stack([10 * (x[:, 1] - x[:, 0] ** 2), 1 - x[:, 0]], dim=1)
    J = torch.zeros(len(x), 2, 2, dtype=D)
    J[:, 0, 0], J[:, 0, 1], J[:, 1, 0] = -20 * x[:, 0], 10.0, -1.0
    return r, J, torch.ones(len(x), dtype=torch.bool)


def test_every_start_reaches_the_rosenbrock_minimum():
    x0 = torch.tensor([[-1.2, 1.0], [2.0, -1.0], [0.0, 0.0], [-3.0, 4.0]], dtype=D)
    big = torch.full((2,), 10.0, dtype=D)
    res = batch_least_squares(rosenbrock, x0, -big, big, max_iter=200)
    assert res.status == ["converged"] * 4
    torch.testing.assert_close(res.x, torch.ones(4, 2, dtype=D), rtol=0, atol=1e-7)
    assert all(h[-1] <= h[0] for h in res.history)
    # every start keeps its own count: they do not run in lockstep to the slowest
    assert len(set(res.nit.tolist())) > 1


def test_a_bound_is_respected_and_reported_converged():
    def fun(x):  # r = x - 3 per coordinate, optimum (3, 3), box [-1, 2] x [-1, 5]
        J = torch.eye(2, dtype=D).expand(len(x), 2, 2)
        return x - 3.0, J, torch.ones(len(x), dtype=torch.bool)

    lo, hi = torch.tensor([-1.0, -1.0], dtype=D), torch.tensor([2.0, 5.0], dtype=D)
    res = batch_least_squares(fun, torch.tensor([[0.0, 0.0], [1.9, 4.9]], dtype=D), lo, hi)
    torch.testing.assert_close(res.x, torch.tensor([[2.0, 3.0], [2.0, 3.0]], dtype=D))
    assert res.status == ["converged", "converged"]


def test_failed_evaluations_are_per_start():
    def fun(x):
        r, J, _ = rosenbrock(x)
        ok = x[:, 0] < 5.0  # the model "cannot be solved" right of x = 5
        return torch.where(ok[:, None], r, torch.nan), J, ok

    x0 = torch.tensor([[6.0, 0.0], [4.0, 0.0]], dtype=D)
    big = torch.full((2,), 10.0, dtype=D)
    res = batch_least_squares(fun, x0, -big, big, max_iter=300)
    assert res.status[0] == "failed" and res.cost[0] == float("inf")
    assert res.status[1] == "converged"  # its trial steps past x = 5 are rejected, not fatal
    torch.testing.assert_close(res.x[1], torch.ones(2, dtype=D), rtol=0, atol=1e-6)


def test_the_optimum_equals_scipy_least_squares():
    rng = np.random.default_rng(3)
    t = np.linspace(0, 4, 30)
    y = 2.5 * np.exp(-1.3 * t) + 0.4 + 0.02 * rng.standard_normal(len(t))
    tt, yy = torch.tensor(t), torch.tensor(y)

    def fun(x):
        a, k, c = x[:, :1], x[:, 1:2], x[:, 2:]
        e = torch.exp(-k * tt)
        r = a * e + c - yy
        J = torch.stack([e, -a * tt * e, torch.ones_like(e)], dim=2)
        return r, J, torch.ones(len(x), dtype=torch.bool)

    x0 = torch.tensor([[1.0, 0.5, 0.0], [5.0, 3.0, 1.0]], dtype=D)
    lo, hi = torch.tensor([0.0, 0.0, -1.0], dtype=D), torch.tensor([10.0, 10.0, 1.0], dtype=D)
    res = batch_least_squares(fun, x0, lo, hi, max_iter=200)
    ref = scipy.optimize.least_squares(
        lambda x: x[0] * np.exp(-x[1] * t) + x[2] - y, [1.0, 0.5, 0.0], method="trf",
        bounds=([0, 0, -1], [10, 10, 1]), xtol=1e-14, ftol=1e-14, gtol=1e-14)
    for b in range(2):
        np.testing.assert_allclose(res.x[b].numpy(), ref.x, rtol=1e-6)
        assert float(res.cost[b]) == pytest.approx(ref.cost, rel=1e-10)


def test_fisher_scoring_fits_a_noise_parameter_fast_and_exactly():
    # data ~ N(mu, sigma): residuals d/sigma and sqrt(2 (ln sigma + C)) per point, so that
    # ½‖r‖² = nllh + const; the optimum is mu = mean, sigma^2 = mean squared deviation
    rng = np.random.default_rng(0)
    y = torch.tensor(3.0 + 0.5 * rng.standard_normal(40))
    n, C = len(y), 50.0

    def fun(x, scoring):
        mu, s = x[:, :1], x[:, 1:]
        sig = torch.exp(s)
        d = (y - mu) / sig
        rs = torch.sqrt(2 * (s + C)).expand(-1, n)
        r = torch.cat([d, rs], dim=1)
        J = torch.zeros(len(x), 2 * n, 2, dtype=D)
        J[:, :n, 0], J[:, :n, 1] = -1 / sig, -d
        J[:, n:, 1] = 1 / rs
        ok = torch.ones(len(x), dtype=torch.bool)
        if not scoring:
            return r, J, ok
        fim = torch.zeros(len(x), 2, 2, dtype=D)
        fim[:, 0, 0], fim[:, 1, 1] = n / sig[:, 0] ** 2, 2.0 * n
        return r, J, ok, fim

    x0 = torch.tensor([[2.0, 1.0], [4.0, -2.0]], dtype=D)
    lo, hi = torch.tensor([-10.0, -5.0], dtype=D), torch.tensor([10.0, 5.0], dtype=D)
    scoring = batch_least_squares(lambda x: fun(x, True), x0, lo, hi, ftol=0, fatol=1e-12)
    plain = batch_least_squares(lambda x: fun(x, False), x0, lo, hi, ftol=0, fatol=1e-12,
                                max_iter=300)
    mu, var = float(y.mean()), float(((y - y.mean()) ** 2).mean())
    for res in (scoring, plain):
        torch.testing.assert_close(res.x[:, 0], torch.full((2,), mu, dtype=D))
        torch.testing.assert_close(res.x[:, 1], torch.full((2,), 0.5 * np.log(var), dtype=D))
    # JᵀJ holds half the curvature in ln sigma: its steps overshoot and converge slowly
    assert int(scoring.nit.max()) < int(plain.nit.min())
