"""Direct gradients: the adaptive solve with autograd recording every accepted step.

Rejected trials build a graph that is dropped as soon as the trial is; the accepted ones
chain into one graph of O(steps x stages) memory. The output times ``t`` are treated as
constants here (no gradient flows to them); use ``gradient="aca"`` for dL/dt.
"""

from __future__ import annotations

import torch

from physode.ode.loop import Config, Stats, integrate
from physode.ode.methods.step import VectorField


def direct_solve(
    func: VectorField, y0: torch.Tensor, t: torch.Tensor, times: list[float], cfg: Config,
    params: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, Stats]:
    """The states at ``times``, differentiable by ordinary backpropagation."""
    return integrate(func, y0, times, cfg)
