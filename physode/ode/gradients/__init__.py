"""Gradient modes registered by name in :data:`GRADIENTS`, each a module over the step interface.

- ``direct``: backpropagate through the accepted steps of the solve.
- ``aca``: Adaptive Checkpoint Adjoint (Zhuang et al., ICML 2020): exact discrete gradient
  from one checkpoint per accepted step and one local graph at a time.
- ``adjoint``: the continuous adjoint ODE solved backwards (Pontryagin; Chen et al. 2018).
"""

from collections.abc import Callable

import torch

from physode.errors import InvalidArgument
from physode.ode.gradients.aca import aca_solve
from physode.ode.gradients.adjoint import adjoint_solve
from physode.ode.gradients.direct import direct_solve
from physode.ode.loop import Config, Stats
from physode.ode.methods.step import VectorField

GradientSolve = Callable[
    [VectorField, torch.Tensor, torch.Tensor, list[float], Config, tuple[torch.Tensor, ...]],
    tuple[torch.Tensor, Stats]]
"""``(func, y0, t, times, cfg, params) -> (ys, stats)``: a solve with its own backward."""

GRADIENTS: dict[str, GradientSolve] = {
    "aca": aca_solve, "direct": direct_solve, "adjoint": adjoint_solve}


def check_gradient(name: object) -> str:
    """``name`` if it is a gradient mode, else :class:`InvalidArgument` listing them."""
    if not isinstance(name, str) or name not in GRADIENTS:
        raise InvalidArgument(f"unknown gradient {name!r}; choose one of {', '.join(GRADIENTS)}")
    return name


__all__ = ["GRADIENTS", "GradientSolve", "check_gradient", "aca_solve", "adjoint_solve",
           "direct_solve"]
