"""Mass action in closed form, with explicit rate constants: the functions a forward-
sensitivity solver needs (:class:`physode.ode.sensitivity_batch.SensitivityField`).

Reaction ``j`` proceeds at ``r_j = k_j m_j(c)`` with the monomial ``m_j = prod_m c[i_jm]``,
one factor per reactant molecule (padded with the constant 1), and ``dc/dt = N r``
(Érdi & Tóth, *Mathematical Models of Chemical Reactions*, 1989, ch. 3). Then

- ``J = df/dc = N diag(k) dm/dc`` and ``F = df/dk = N diag(m)``;
- along a direction ``u`` in concentration space, ``sum_l u_l dJ/dc_l = N diag(k) D_u
  dm/dc`` and ``sum_l u_l dF/dc_l = N diag(D_u m)``, where ``D_u`` is the directional
  derivative.

Every derivative of a monomial is a sum of products of the other factors (product rule),
never a power with a negative exponent, so all of them are finite at zero concentration.
The rate constants are an explicit argument ``k (..., R)``, so one set of functions serves
every parameter vector of a batch; all functions broadcast over leading axes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from physode.ode.sensitivity_batch import small_matmul
from systems.sparse_kinetics import SparseMassAction


def _prod(factors: list[Tensor], like: Tensor) -> Tensor:
    """The product of ``factors`` (1 for none), shaped like ``like``."""
    return math.prod(factors, start=torch.ones_like(like)) if factors else torch.ones_like(like)


class MassActionForms:
    """``rhs``, ``jacobian``, ``param_jacobian`` and their directional derivatives in the
    concentrations for stoichiometry ``N (n, R)`` and reactant factor indices ``idx (R,
    order)`` (index ``n`` is the constant-1 padding); with ``sparse`` (a large network's
    non-zeros, :mod:`systems.sparse_kinetics`) the field, J and its directional
    derivative are assembled from the non-zeros instead of dense products."""

    def __init__(self, stoichiometry: Tensor, react_idx: Tensor,
                 sparse: SparseMassAction | None = None) -> None:
        self.sparse = sparse
        self.N = stoichiometry.detach().to(torch.float64)
        self.idx = react_idx.detach()
        n = self.N.shape[0]
        self.onehot = torch.nn.functional.one_hot(self.idx, n + 1)[..., :n].to(torch.float64)
        self.order = self.idx.shape[1]

    def _factors(self, c: Tensor, pad: float) -> Tensor:
        padded = torch.cat([c, torch.full_like(c[..., :1], pad)], dim=-1)
        return padded[..., self.idx]  # (..., R, order)

    def _others(self, f: Tensor) -> Tensor:
        """``(..., R, order)``: for each factor, the product of the others (``dm/df_m``)."""
        cols = [_prod([f[..., i] for i in range(self.order) if i != m], f[..., 0])
                for m in range(self.order)]
        return torch.stack(cols, dim=-1)

    def _others_dir(self, f: Tensor, uf: Tensor) -> Tensor:
        """The directional derivative of :meth:`_others` along the factor increments
        ``uf`` (broadcast against ``f``)."""
        cols = []
        for m in range(self.order):
            acc = torch.zeros_like(uf[..., 0] * f[..., 0])
            for mm in range(self.order):
                if mm != m:
                    rest = [f[..., i] for i in range(self.order) if i not in (m, mm)]
                    acc = acc + uf[..., mm] * _prod(rest, f[..., 0])
            cols.append(acc)
        return torch.stack(cols, dim=-1)

    def _to_species(self, dm: Tensor) -> Tensor:
        """``(..., R, order)`` per factor -> ``(..., R, n)`` per species."""
        if torch.compiler.is_compiling():  # a fused loop rather than a batched product
            return (dm.unsqueeze(-1) * self.onehot.to(dm.dtype)).sum(-2)
        return torch.einsum("...jm,jms->...js", dm, self.onehot.to(dm.dtype))

    def rhs(self, t: Tensor, c: Tensor, k: Tensor) -> Tensor:
        """``f = N (k * m(c))``: ``(..., n)``."""
        if self.sparse is not None:
            return self.sparse.field(k * self._factors(c, 1.0).prod(-1))
        return small_matmul(k * self._factors(c, 1.0).prod(-1), self.N.to(c.dtype).T)

    def jacobian(self, t: Tensor, c: Tensor, k: Tensor) -> Tensor:
        """``J = N diag(k) dm/dc``: ``(..., n, n)``."""
        if self.sparse is not None:
            return self.sparse.jacobian(k[..., :, None] * self._others(self._factors(c, 1.0)))
        dm = self._to_species(self._others(self._factors(c, 1.0)))
        return small_matmul(self.N.to(c.dtype), k[..., :, None] * dm)

    def param_jacobian(self, t: Tensor, c: Tensor, k: Tensor) -> Tensor:
        """``F = N diag(m(c))``: ``(..., n, R)``."""
        return self.N.to(c.dtype) * self._factors(c, 1.0).prod(-1)[..., None, :]

    def jacobian_dir(self, t: Tensor, c: Tensor, k: Tensor, u: Tensor) -> Tensor:
        """``sum_l u_l dJ/dc_l``: ``(..., n, n)``, leading axes of ``u`` first."""
        f, uf = self._factors(c, 1.0), self._factors(u, 0.0)
        if self.sparse is not None:
            return self.sparse.jacobian(k[..., :, None] * self._others_dir(f, uf))
        dm = self._to_species(self._others_dir(f, uf))
        return small_matmul(self.N.to(c.dtype), k[..., :, None] * dm)

    def param_jacobian_dir(self, t: Tensor, c: Tensor, k: Tensor, u: Tensor) -> Tensor:
        """``sum_l u_l dF/dc_l = N diag(D_u m)``: ``(..., n, R)``."""
        f, uf = self._factors(c, 1.0), self._factors(u, 0.0)
        return self.N.to(c.dtype) * (uf * self._others(f)).sum(-1)[..., None, :]


__all__ = ["MassActionForms"]
