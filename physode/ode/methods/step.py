"""The vocabulary every method speaks: the vector field type, one trial step, solver times.

:class:`Step` is what a method's ``step`` returns; :func:`time_tensor` turns a solver time
into the 0-d tensor a vector field receives; :func:`declaration` reads what a user's vector
field declares about itself. Kept apart from :mod:`.base` so that the error norm, the
interpolant and the method families can all use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

VectorField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``func(t, y) -> dy/dt`` with ``t`` a 0-d tensor and the result shaped like ``y``."""

Time = float | torch.Tensor
"""A time or step size: a Python float in eager mode, a 0-d tensor inside a compiled step."""


class Step(NamedTuple):
    """One trial step: the new state, the local error estimate(s) and the stages."""

    y1: torch.Tensor
    err: torch.Tensor | None  # the embedded local error estimate (None: fixed-step method)
    err3: torch.Tensor | None  # DOP853's second estimate (Hairer's 8(5,3) norm), else None
    ks: list[torch.Tensor]  # the stages (for FSAL explicit RK, ks[-1] = f(t+h, y1))
    # the inverse a stiff step solved its stages with, inside a compiled loop (else None):
    # what ``Method.step_reusing`` takes back when the ACA reverse sweep rebuilds the step
    factor: torch.Tensor | None = None


def time_tensor(t: Time, like: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor holding time ``t`` with the state's dtype and device (what func gets)."""
    if isinstance(t, torch.Tensor):
        return t.to(like.dtype)
    return torch.full((), t, dtype=like.dtype, device=like.device)


def declaration(func: object, name: str, *, bound_owner: bool = False) -> Any:
    """The user's optional declaration ``name`` on the vector field (``jacobian``,
    ``time_derivative``, ``autonomous``, ``state_size``, ``position_velocity_split``,
    ``state_slice``, ``function_transforms``: the field applies ``torch.func``
    transforms when called), or None when ``func`` does not declare it. ``bound_owner``: also look
    on the object a bound-method ``func`` belongs to. The one place physode reads what a
    user's ``func`` says about itself (methods declare their own capabilities as attributes
    of :class:`physode.ode.methods.base.Method`)."""
    value = getattr(func, name, None)
    if value is None and bound_owner:
        value = getattr(getattr(func, "__self__", None), name, None)
    return value


__all__ = ["Step", "Time", "VectorField", "declaration", "time_tensor"]
