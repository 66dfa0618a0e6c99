"""The interface every stepper family implements (explicit RK, Rosenbrock, symplectic).

The integration loop (:mod:`physode.ode.loop`) and the gradients (:mod:`physode.ode.gradients`)
only talk to a method through this protocol, so a new family is a new class registered in
:data:`physode.ode.methods.METHODS` — never an if/elif on method names.
"""

from __future__ import annotations

from typing import Protocol

import torch

from physode.ode.methods.stepper import Step, VectorField


class Method(Protocol):
    name: str
    order: int
    fsal: bool
    error_order: int | None  # None for fixed-step methods
    pi_beta: float
    dense_order: int
    citation: str

    @property
    def adaptive(self) -> bool: ...

    @property
    def nfe_per_step(self) -> int: ...

    @property
    def nfe_dense(self) -> int: ...

    def step(self, func: VectorField, t: float, h: float, y0: torch.Tensor,
             f0: torch.Tensor) -> Step:
        """One trial step; a pure function of tensors (rebuilt verbatim by ACA)."""

    def f1(self, func: VectorField, t1: float, step: Step) -> torch.Tensor | None:
        """f(t+h, y1) when the step already computed it, else None (the loop evaluates)."""

    def extended_stages(self, func: VectorField, t: float, h: float, y0: torch.Tensor,
                        ks: list[torch.Tensor], f1: torch.Tensor) -> list[torch.Tensor]:
        """The vectors the dense output is a combination of."""

    def dense_eval(self, h: float, y0: torch.Tensor, ext: list[torch.Tensor],
                   thetas: torch.Tensor) -> torch.Tensor:
        """States at t + theta h for every theta, shape (len(thetas), *y0.shape)."""
