"""Mass action assembled from the stoichiometry's non-zeros: the field and its Jacobian of
a large reaction network without dense products.

A reaction touches a few species (its reactants and products), so the stoichiometry
``N (n, R)`` of a network of n species and R reactions has ``O(R)`` non-zeros, and so has
``J = N dr/dc``: ``dr_j/dc_i`` is non-zero only for the reactants i of reaction j. The
dense forms cost ``n R`` (field) and ``n R n`` (Jacobian) multiply-adds per evaluation:
for the 52-species Michaelis–Menten chain of ``benchmarks/stiff_kinetics.py`` (51
reactions), 140 000 per Jacobian, where the non-zeros are ~200. Here both are gathers,
products and one scatter-add (``index_add``) over the non-zeros, in the coordinate
(COO) form of a sparse matrix (Saad, *Iterative Methods for Sparse Linear Systems*, 2nd
ed., SIAM 2003, sec. 3.4): what sparse Jacobian assembly in stiff solvers does (CVODES'
sparse linear solvers take J in compressed form, Hindmarsh et al., ACM TOMS 31:363, 2005).
The Jacobian is still returned dense: the stiff steps factorise it as a dense matrix.

:class:`~systems.kinetics.ReactionNetwork` uses these forms from :data:`SPARSE_FROM`
species on (below, the dense products are fused into one loop and measured as fast).
"""

from __future__ import annotations

import torch
from torch import Tensor

SPARSE_FROM = 16
"""Networks with at least this many species assemble field and Jacobian from non-zeros."""


class SparseMassAction(torch.nn.Module):
    """The index lists of one network's non-zeros (buffers: they follow ``.to(device)``).

    Args:
        stoichiometry: ``N (n, R)``, integer entries.
        react_idx: ``(R, order)`` reactant factor indices of each reaction's monomial, one
            per molecule, padded with ``n`` (the constant 1).
    """

    def __init__(self, stoichiometry: list[list[int]], react_idx: Tensor) -> None:
        super().__init__()
        n = len(stoichiometry)
        R, order = react_idx.shape
        f_species, f_reaction, f_coef = [], [], []
        j_flat, j_source, j_coef = [], [], []
        for s in range(n):
            for j in range(R):
                c = stoichiometry[s][j]
                if c == 0:
                    continue
                f_species.append(s)
                f_reaction.append(j)
                f_coef.append(float(c))
                for m in range(order):  # dr_j/dc_i for the reactant i of factor m
                    i = int(react_idx[j, m])
                    if i < n:
                        j_flat.append(s * n + i)
                        j_source.append(j * order + m)
                        j_coef.append(float(c))
        self.n = n

        def index(values: list[int]) -> Tensor:
            return torch.tensor(values, dtype=torch.long)

        self.register_buffer("f_species", index(f_species), persistent=False)
        self.register_buffer("f_reaction", index(f_reaction), persistent=False)
        self.register_buffer("f_coef", torch.tensor(f_coef, dtype=torch.float64), persistent=False)
        self.register_buffer("j_flat", index(j_flat), persistent=False)
        self.register_buffer("j_source", index(j_source), persistent=False)
        self.register_buffer("j_coef", torch.tensor(j_coef, dtype=torch.float64), persistent=False)

    def field(self, rates: Tensor) -> Tensor:
        """``N r`` for rates ``(*batch, R)``: ``(*batch, n)``."""
        terms = rates.index_select(-1, self.f_reaction) * self.f_coef.to(rates.dtype)
        out = rates.new_zeros((*rates.shape[:-1], self.n))
        return out.index_add(-1, self.f_species, terms)

    def jacobian(self, partials: Tensor) -> Tensor:
        """``N dr/dc`` from the monomials' partials ``(*batch, R, order)`` (``k_j`` times
        the product of the other factors of factor m): ``(*batch, n, n)``."""
        flat = partials.reshape(*partials.shape[:-2], -1)
        terms = flat.index_select(-1, self.j_source) * self.j_coef.to(flat.dtype)
        out = flat.new_zeros((*flat.shape[:-1], self.n * self.n))
        return out.index_add(-1, self.j_flat, terms).reshape(*flat.shape[:-1], self.n,
                                                             self.n)


__all__ = ["SPARSE_FROM", "SparseMassAction"]
