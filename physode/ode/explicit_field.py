"""A system's dynamics with its parameters as one explicit vector, for the compiled ACA loops.

A reaction network holds one parameter tensor per rate constant, and its field stacks
them (each through its transform) at every evaluation. Inside the compiled loops that is
a stack of as many inputs as there are rates in every step and stage, and in the ACA
reverse loop its derivative too: the 52-species chain's reverse loop (51 rates) became
3 MB of C++ that did not compile in eight minutes. A system that offers its dynamics with
explicit parameters (``sensitivity_model()``: ``rhs(t, y, p)``, ``jacobian(t, y, p)``
and ``p = parameters()`` as a differentiable function of its own parameters, the form
the staggered sensitivities use) is solved instead as :class:`ExplicitField`, a module
with the one parameter ``p``: the loops substitute and differentiate one vector, and
autograd carries ``dL/dp`` back to the system's parameters through ``parameters()``.

Only for autonomous fields (mass action is): the field declares ``autonomous`` and its
closed-form ``jacobian``, which the Rosenbrock steps read
(:mod:`physode.ode.methods.jacobian`).
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from physode.ode.methods.step import VectorField, declaration
from physode.ode.sensitivity_step import SensitivityField, SensitivityModel


class ExplicitField(nn.Module):
    """``f(t, y) = rhs(t, y, p)`` with ``p`` its only parameter; ``jacobian(t, y)`` and
    ``autonomous`` declared from the :class:`SensitivityField`, and the system's
    ``state_size`` (a batch of independent rows, such as experiments solved together,
    keeps its per-row Jacobians)."""

    autonomous = True

    def __init__(self, field: SensitivityField, p: Tensor, state_size: int | None) -> None:
        super().__init__()
        self.field = field
        self.p = nn.Parameter(p.detach().clone())
        self.state_size = state_size

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        out: Tensor = self.field.rhs(t, y, self.p)
        return out

    def jacobian(self, t: Tensor, y: Tensor) -> Tensor:
        """``df/dy`` in closed form (``(n, n)`` for a state ``(n,)``)."""
        out: Tensor = self.field.jacobian(t, y, self.p)
        return out


_FIELDS: dict[int, ExplicitField] = {}


def _field_for(field: SensitivityField, p: Tensor, state_size: int | None) -> ExplicitField:
    """One :class:`ExplicitField` per sensitivity field, alive as long as that field (the
    compiled loops guard on the module they were traced with: a new one would retrace)."""
    key = id(field)
    explicit = _FIELDS.get(key)
    if (explicit is None or explicit.p.shape != p.shape or explicit.p.dtype != p.dtype
            or explicit.state_size != state_size):
        explicit = ExplicitField(field, p, state_size)
        _FIELDS[key] = explicit
        weakref.finalize(field, _FIELDS.pop, key, None)
    return explicit


def explicit_form(func: VectorField) -> tuple[ExplicitField, Tensor] | None:
    """``(field, p)`` when ``func`` offers autonomous dynamics with explicit parameters
    (``sensitivity_model()``), with ``field.p`` set to the current ``p``; ``p`` keeps its
    graph to ``func``'s parameters. None otherwise."""
    hook = declaration(func, "sensitivity_model")
    if hook is None or not callable(hook):
        return None
    model = hook()
    if not isinstance(model, SensitivityModel) or not model.field.autonomous:
        return None
    p = model.parameters()
    explicit = _field_for(model.field, p, declaration(func, "state_size"))
    with torch.no_grad():
        explicit.p.copy_(p.detach())
    return explicit, p


__all__ = ["ExplicitField", "explicit_form"]
