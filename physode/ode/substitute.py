"""A module's vector field with its parameters substituted, keeping what it declares.

The compiled loops (:mod:`physode.ode.compiled_loop`) differentiate a step with respect to
the parameters of an ``nn.Module`` vector field by substituting them functionally
(``torch.func.functional_call``). A bare closure over ``functional_call`` would drop what
the module declares about itself (:func:`physode.ode.methods.step.declaration`): its
closed-form ``jacobian`` and ``time_derivative`` hooks, ``autonomous`` and ``state_size``.
Then a Rosenbrock step rebuilt in the ACA reverse sweep would take its Jacobian by
autograd while the forward step used the closed form — the same matrix up to round-off,
but not the same discrete method. :class:`Substituted` keeps them: the hooks run with the
substituted parameters too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.stateless import _reparametrize_module

from physode.ode.methods.step import VectorField, declaration

_HOOKS = ("jacobian", "time_derivative")


class _Declared:
    """A value declaration of the substituted module, read when a method asks for it: a
    declaration may read a parameter's value (the pendulum's ``position_velocity_split``
    is None when damped), which inside a traced graph is a data-dependent guard (torch
    raises), so only the methods that use it read it."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Substituted | None, owner: type | None = None) -> Any:
        return self if obj is None else declaration(obj.module, self.name)


class Substituted:
    """``module(t, y)`` with the parameters ``values`` (``{name: tensor}``) in place of its
    own; its declarations read as the module's (hooks evaluated with ``values`` too)."""

    def __init__(self, module: nn.Module, values: dict[str, Tensor]) -> None:
        self.module = module
        self.values = values
        for name in _HOOKS:
            if declaration(module, name) is not None:
                setattr(self, name, self._hook(name))

    # the module's value declarations, read when asked (see _Declared)
    autonomous = _Declared()
    state_size = _Declared()
    position_velocity_split = _Declared()
    state_slice = _Declared()

    def _hook(self, name: str) -> Callable[[Tensor, Tensor], Tensor]:
        module, values = self.module, self.values

        def hook(t: Tensor, y: Tensor) -> Tensor:
            # what functional_call does for forward, for another method (dynamo traces it)
            with _reparametrize_module(module, values):
                out: Tensor = declaration(module, name)(t, y)
            return out

        return hook

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        out: Tensor = torch.func.functional_call(self.module, self.values, (t, y))
        return out


def substituted(func: VectorField, names: tuple[str, ...],
                params: tuple[Tensor, ...]) -> VectorField:
    """``func`` with its parameters called ``names`` replaced by ``params`` (pure), or
    ``func`` itself when there is nothing to replace."""
    if not names:
        return func
    module: Any = func
    assert isinstance(module, nn.Module)
    return Substituted(module, dict(zip(names, params)))


__all__ = ["Substituted", "substituted"]
