"""Gradient modes: each a small module over the shared step interface.

- ``direct``: backpropagate through the accepted steps of the solve.
- ``aca``: Adaptive Checkpoint Adjoint (Zhuang et al., ICML 2020): exact discrete gradient
  from one checkpoint per accepted step and one local graph at a time.
- ``adjoint``: the continuous adjoint ODE solved backwards (Pontryagin; Chen et al. 2018).
"""

from physode.ode.gradients.aca import aca_solve
from physode.ode.gradients.adjoint import adjoint_solve
from physode.ode.gradients.direct import direct_solve

GRADIENTS = {"aca": aca_solve, "direct": direct_solve, "adjoint": adjoint_solve}

__all__ = ["GRADIENTS", "aca_solve", "adjoint_solve", "direct_solve"]
