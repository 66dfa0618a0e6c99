"""The unrolled Gauss–Jordan inverse of the compiled Rosenbrock loops."""

from __future__ import annotations

import pytest
import torch

from physode.ode.methods.small_inverse import MAX_SIZE, gauss_jordan, inverse, small_inverse


def _matrices(n: int, batch: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("n", [1, 2, 3, 7, MAX_SIZE])
def test_inverse_matches_lapack(n: int) -> None:
    A = _matrices(n)
    X = gauss_jordan(A)
    ref = torch.linalg.inv(A)
    cond = torch.linalg.cond(A).max()
    assert torch.allclose(X, ref, rtol=0, atol=1e-14 * float(cond) * float(ref.abs().max()))
    assert torch.allclose(X @ A, torch.eye(n, dtype=A.dtype).expand_as(A), atol=1e-11)


def test_pivoting_handles_a_zero_diagonal() -> None:
    """Without row interchanges the first pivot would be 0 (a permutation matrix) or tiny."""
    P = torch.eye(4, dtype=torch.float64)[[2, 0, 3, 1]]
    assert torch.equal(gauss_jordan(P), P.T)
    A = torch.tensor([[1e-18, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(gauss_jordan(A), torch.linalg.inv(A), rtol=1e-15, atol=0)


def test_singular_matrix_is_not_finite() -> None:
    """The step's error norm rejects a non-finite step, as it does after LAPACK's."""
    A = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64)
    assert not bool(torch.isfinite(gauss_jordan(A)).all())


def test_derivative_is_the_exact_inverse_derivative() -> None:
    A = (_matrices(4, batch=2, seed=1) + 4 * torch.eye(4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(small_inverse, (A,))
    G = torch.randn(2, 4, 4, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad((small_inverse(A) * G).sum(), A)
    (g_ref,) = torch.autograd.grad((torch.linalg.inv(A) * G).sum(), A)
    assert torch.allclose(g_ours, g_ref, rtol=1e-12, atol=1e-14)
    _, vjp = torch.func.vjp(small_inverse, A.detach())
    assert torch.allclose(vjp(G)[0], g_ref, rtol=1e-12, atol=1e-14)
    _, tangent = torch.func.jvp(small_inverse, (A.detach(),), (G,))
    X = torch.linalg.inv(A.detach())
    assert torch.allclose(tangent, -X @ G @ X, rtol=1e-12, atol=1e-14)


def test_without_grad_mode_the_value_is_the_same() -> None:
    A = _matrices(5) + 5 * torch.eye(5, dtype=torch.float64)
    with torch.no_grad():
        plain = small_inverse(A)
    assert torch.equal(plain, small_inverse(A))


def test_large_matrices_keep_lapack() -> None:
    A = _matrices(MAX_SIZE + 1, batch=1) + 10 * torch.eye(MAX_SIZE + 1, dtype=torch.float64)
    assert torch.equal(inverse(A), torch.linalg.inv_ex(A)[0])


def test_compiled_equals_eager() -> None:
    A = _matrices(7) + 3 * torch.eye(7, dtype=torch.float64)
    compiled = torch.compile(gauss_jordan, fullgraph=True)
    assert torch.allclose(compiled(A), gauss_jordan(A), rtol=1e-13, atol=1e-15)
