"""Whether a solve runs as compiled loops, and the one fallback when it cannot.

Both the whole-solve loops (:mod:`physode.ode.compiled_loop`) and the per-sample ones
(:mod:`physode.ode.compiled_batch`) apply to the same cases: a forward-only solve, or
``gradient="aca"`` with the parameters of an ``nn.Module`` vector field (the reverse loop
swaps them in by name). A vector field that dynamo or inductor cannot compile as a loop
falls back once, with a warning, and is remembered so it is not tried again.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

from torch import Tensor

from physode.errors import PhysodeError
from physode.ode.compiled_loop import usable
from physode.ode.gradients.compiled_aca import module_names
from physode.ode.loop import Config
from physode.ode.methods.step import VectorField

R = TypeVar("R")


def try_loops(func: VectorField, cfg: Config, n_out: int, gradient: str,
              ps: tuple[Tensor, ...], needs_grad: bool, refused: set[int],
              forward: Callable[[], R], aca: Callable[[tuple[str, ...]], R],
              what: str, instead: str) -> R | None:
    """``forward()`` or ``aca(names)`` when compiled loops apply, else None.

    ``refused`` holds the ids of vector fields that failed to compile before (each caller
    keeps its own); ``what`` and ``instead`` complete the warning: "could not compile
    {what} ...; {instead}".
    """
    if n_out < 2 or not usable(cfg) or id(func) in refused:
        return None
    names = module_names(func, ps) if needs_grad else ()
    if needs_grad and (gradient != "aca" or names is None):
        return None
    try:
        if not needs_grad:
            return forward()
        assert names is not None
        return aca(names)
    except PhysodeError:
        raise
    except Exception as exc:  # a vector field dynamo/inductor cannot compile as a loop
        refused.add(id(func))
        warnings.warn(f"physode: could not compile {what} with this vector field "
                      f"({type(exc).__name__}: {str(exc)[:200]}); {instead}", stacklevel=4)
        return None


__all__ = ["try_loops"]
