"""Steady states: Newton with an integration fallback, against the closed form of a linear
system y' = A y + b (y* = -A⁻¹ b); gradients by the implicit function theorem against
finite differences; conserved moieties; a clear error when there is none."""

import pytest
import torch

import physode
from physode.errors import InvalidArgument, SteadyStateNotFound


def _linear():
    torch.manual_seed(0)
    A = (0.5 * torch.randn(3, 3, dtype=torch.float64) - 2 * torch.eye(3, dtype=torch.float64))
    b = torch.randn(3, dtype=torch.float64)
    return A.requires_grad_(), b.requires_grad_()


@pytest.mark.parametrize("max_iter", [50, 1])  # 1: Newton cannot finish, integration does
def test_linear_steady_state_is_the_closed_form(max_iter):
    A, b = _linear()
    y = physode.steady_state(lambda t, y: A @ y + b, torch.zeros(3), params=(A, b),
                             max_iter=max_iter)
    ref = -torch.linalg.solve(A.detach(), b.detach())
    assert torch.allclose(y.detach(), ref, atol=1e-9, rtol=0)


def test_ift_gradients_match_finite_differences():
    A, b = _linear()
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def loss(A_, b_):
        return (w * physode.steady_state(lambda t, y: A_ @ y + b_, torch.zeros(3),
                                         params=(A_, b_))).sum()

    gA, gb = torch.autograd.grad(loss(A, b), [A, b])
    step = 1e-6
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = step
        fd = (loss(A.detach(), b.detach() + e) - loss(A.detach(), b.detach() - e)) / (2 * step)
        assert abs(gb[i].item() - fd.item()) < 1e-7
        E = torch.zeros(3, 3, dtype=torch.float64)
        E[i, (i + 1) % 3] = step
        fd = (loss(A.detach() + E, b.detach()) - loss(A.detach() - E, b.detach())) / (2 * step)
        assert abs(gA[i, (i + 1) % 3].item() - fd.item()) < 1e-7


def test_conserved_moiety_takes_its_total_from_y0():
    k = torch.tensor([2.0, 0.5], requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], requires_grad=True)

    def field(t, y):  # A <-> B: A + B is conserved, J is singular
        return torch.stack([-k[0] * y[0] + k[1] * y[1], k[0] * y[0] - k[1] * y[1]])

    y = physode.steady_state(field, y0, params=(k,))
    total = 1.5
    assert torch.allclose(y.detach(), torch.tensor([total * 0.5 / 2.5, total * 2.0 / 2.5]),
                          atol=1e-12)
    gk, gy0 = torch.autograd.grad(y[0], [k, y0])
    # y_A = T k2 / (k1 + k2): dk1 = -T k2 / s², dk2 = T k1 / s², d/dy0 = (k2 / s, k2 / s)
    assert torch.allclose(gk, torch.tensor([-total * 0.5 / 6.25, total * 2.0 / 6.25]),
                          atol=1e-10)
    assert torch.allclose(gy0, torch.tensor([0.2, 0.2]), atol=1e-10)


def test_no_steady_state_is_a_clear_error():
    with pytest.raises(SteadyStateNotFound, match="no steady state found"):
        physode.steady_state(lambda t, y: torch.ones_like(y), torch.zeros(2), t_max=10.0)
    with pytest.raises(InvalidArgument, match="tol must be a positive"):
        physode.steady_state(lambda t, y: -y, torch.zeros(2), tol=-1.0)
