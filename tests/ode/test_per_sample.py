"""per_sample=True: every sample its own steps, equal to B separate solves; ACA = direct."""

from __future__ import annotations

import pytest
import torch

import physode
from physode.ode.batch_parts import BatchStats


class Damped(torch.nn.Module):
    """Row-wise y'' = -k y - c y' + 0.1 sin t with one (k, c) per sample (learnable)."""

    def __init__(self, k: torch.Tensor, c: torch.Tensor) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.as_tensor(k, dtype=torch.float64).clone())
        self.c = torch.nn.Parameter(torch.as_tensor(c, dtype=torch.float64).clone())

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[..., 1], -self.k * y[..., 0] - self.c * y[..., 1]
                            + 0.1 * torch.sin(t)], -1)


F64 = torch.float64
K = torch.tensor([1.0, 4.0, 40.0, 0.5], dtype=F64)  # sample 2 is stiffer: many more steps
C = torch.tensor([0.1, 0.3, 0.5, 0.05], dtype=F64)
Y0 = torch.tensor([[1.0, 0.0], [0.5, 0.2], [1.0, 1.0], [0.0, 1.0]], dtype=F64)
TOL = {"rtol": 1e-8, "atol": 1e-10}


def _loss(ys: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A loss reading every output (so interpolated outputs carry cotangents)."""
    w = torch.cos(2 * t)
    w = w[:, None] if ys.ndim == 3 and w.ndim == 1 else w  # shared times in a batch
    return (ys[..., 0] * w).sum() + ys[-1, ..., 1].square().sum()


def _separate(b: int, t: torch.Tensor, method: str = "dopri5", **kw):
    """Sample b solved alone: solution and gradients of its share of the loss."""
    field = Damped(K[b], C[b])
    y0 = Y0[b].clone().requires_grad_(True)
    tt = t.clone().requires_grad_(True)
    sol = physode.solve(field, y0, tt, method=method, **TOL, **kw)
    grads = torch.autograd.grad(_loss(sol.ys, t), [y0, tt, field.k, field.c])
    return sol, grads


def _batched(t: torch.Tensor, gradient: str, method: str = "dopri5", **kw):
    field = Damped(K, C)
    y0 = Y0.clone().requires_grad_(True)
    tt = t.clone().requires_grad_(True)
    sol = physode.solve(field, y0, tt, method=method, gradient=gradient, per_sample=True,
                        **TOL, **kw)
    wanted = [y0, tt, field.k, field.c]
    grads = torch.autograd.grad(_loss(sol.ys, t), wanted, allow_unused=True)
    return sol, grads


@pytest.mark.parametrize(("method", "rtol"), [("dopri5", 1e-8), ("tsit5", 1e-8), ("bosh3", 1e-6),
                                           ("heun_euler", 1e-4), ("dopri8", 1e-8)])
def test_each_sample_takes_the_steps_of_its_own_solve(method, rtol):
    t = torch.linspace(0, 3, 11)
    tol = {"rtol": rtol, "atol": rtol * 1e-2}
    with torch.no_grad():
        sol = physode.solve(Damped(K, C), Y0, t, method=method, per_sample=True, **tol)
    assert sol.ys.shape == (11, 4, 2)
    assert isinstance(sol.stats, BatchStats) and len(sol.stats) == 4
    steps = []
    for b in range(4):
        with torch.no_grad():
            alone = physode.solve(Damped(K[b], C[b]), Y0[b], t, method=method, **tol)
        assert sol.stats[b] == alone.stats, f"sample {b}"
        assert torch.allclose(sol.ys[:, b], alone.ys, rtol=1e-10, atol=1e-11), f"sample {b}"
        steps.append(alone.stats.accepted)
    assert max(steps) > 2 * min(steps)  # the stiff sample did not set everybody's step
    assert sol.stats.accepted == sum(steps)
    assert sol.stats.calls < sol.stats.nfe  # one batched call serves every sample


def test_aca_equals_direct_and_the_separate_gradients():
    t = torch.linspace(0, 3, 11)
    aca, g_aca = _batched(t, "aca")
    direct, g_dir = _batched(t, "direct")
    assert aca.stats.samples == direct.stats.samples
    for name, a, d in zip(["y0", "t", "k", "c"], g_aca, g_dir):
        if name != "t":  # direct treats the output times as constants
            assert torch.allclose(a, d, rtol=1e-10, atol=1e-13), name
    separate = [_separate(b, t)[1] for b in range(4)]
    for b, g in enumerate(separate):
        assert torch.allclose(g_aca[0][b], g[0], rtol=1e-10, atol=1e-13), f"y0, sample {b}"
        assert torch.allclose(g_aca[2][b], g[2], rtol=1e-10, atol=1e-13), f"k, sample {b}"
        assert torch.allclose(g_aca[3][b], g[3], rtol=1e-10, atol=1e-13), f"c, sample {b}"
    total_t = sum(g[1] for g in separate)
    assert torch.allclose(g_aca[1], total_t, rtol=1e-10, atol=1e-12)  # shared t: summed


def test_per_sample_time_grids_and_directions():
    """t of shape (n, B): its own grid per sample, one of them backwards in time."""
    t = torch.stack([torch.linspace(0, 3, 9), torch.linspace(0.5, 1.0, 9),
                     torch.linspace(2.0, -1.0, 9), torch.linspace(0, 6, 9) ** 1.5], 1)
    aca, g_aca = _batched(t, "aca")
    direct, g_dir = _batched(t, "direct")
    assert aca.ys.shape == (9, 4, 2) and aca.ts.shape == (9, 4)
    assert torch.allclose(aca.ys, direct.ys, rtol=0, atol=0)
    assert g_aca[1].shape == (9, 4)
    for b in range(4):
        alone, g = _separate(b, t[:, b])
        assert aca.stats[b] == alone.stats, f"sample {b}"
        assert torch.allclose(aca.ys[:, b], alone.ys, rtol=1e-11, atol=1e-13)
        assert torch.allclose(g_aca[1][:, b], g[1], rtol=1e-10, atol=1e-12), f"t, sample {b}"
        for i in (0, 2, 3):
            ours = g_aca[i][b]
            assert torch.allclose(ours, g[i], rtol=1e-10, atol=1e-13), (i, b)
            assert torch.allclose(g_dir[i][b], g[i], rtol=1e-10, atol=1e-13), (i, b)


def test_an_overflowing_rejected_trial_leaves_direct_gradients_finite():
    """y' = p y^3 with a huge first step: the first trial overflows to inf in sample 1 and
    is rejected; the direct graph must not turn 0 * inf into NaN."""
    p = torch.tensor([1.0, 1.0], requires_grad=True)

    def field(t, y):
        return p[:, None] * y**3

    y0 = torch.tensor([[0.1], [10.0]])
    t = torch.tensor([0.0, 1e-3, 2e-3])
    grads = {}
    for gradient in ("aca", "direct"):
        sol = physode.solve(field, y0, t, gradient=gradient, per_sample=True, params=(p,),
                            options={"first_step": 1.0}, **TOL)
        assert sol.stats[1].rejected > 0
        grads[gradient] = torch.autograd.grad(sol.ys.sum(), p)[0]
    assert torch.isfinite(grads["direct"]).all()
    assert torch.allclose(grads["aca"], grads["direct"], rtol=1e-10)


def test_errors_name_the_sample_and_unsupported_set_ups_are_refused():
    t = torch.linspace(0, 3, 5)
    field = Damped(K, C)
    with pytest.raises(physode.MaxStepsExceeded, match="sample 2 of the batch"):
        physode.odeint(field, Y0, t, per_sample=True, options={"max_steps": 100}, **TOL)
    bad = Y0.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(physode.NonFiniteState, match="sample 3 of the batch.*initial state"):
        physode.odeint(field, bad, t, per_sample=True)
    with pytest.raises(physode.InvalidArgument, match="explicit Runge-Kutta"):
        physode.odeint(field, Y0, t, per_sample=True, method="rodas4")
    with pytest.raises(physode.InvalidArgument, match="not 'adjoint'"):
        physode.odeint(field, Y0, t, per_sample=True, gradient="adjoint")
    with pytest.raises(physode.InvalidArgument, match=r"shape \(n,\).*\(n, 4\)"):
        physode.odeint(field, Y0, torch.zeros(5, 3), per_sample=True)
    with pytest.raises(physode.InvalidArgument, match=r"t\[:, 1\]: times are not"):
        physode.odeint(field, Y0, torch.tensor([[0.0] * 4, [1.0, -1.0, 1.0, 1.0],
                                                [2.0] * 4]), per_sample=True)
    with pytest.raises(physode.InvalidArgument, match="step_to_outputs"):
        physode.odeint(field, Y0, t, per_sample=True, options={"step_to_outputs": True})
