"""What a System offers experiments: observables, inputs, default dosing, parameter overrides.

A mixin of :class:`~physode.model.system.System` (kept here so that ``system.py`` stays
small):

- **Observables.** A system may declare derived quantities that an experiment measures
  instead of a state variable, PEtab's "observables" (PEtab v1 specification, observable
  table): ``observable_vars`` declares their names, shapes, dimensions and units (as
  :class:`~physode.model.state.StateVar` s), and ``observables(t, state)`` computes them
  from the named state, reading parameters as ``self.<name>`` (a scale or an offset is an
  ordinary :class:`~physode.model.parameter.Parameter`)::

      observable_vars = (StateVar("total", units="mM"),)

      def observables(self, t, s):
          return {"total": self.scale * (s["A"] + s["B"]) + self.offset}

- **Inputs.** ``self.input("feed", t)`` inside ``vector_field`` reads the forcing an
  experiment carries under that name (piecewise constant, linear or spline data);
  ``input_names`` declares the names a system reads.
- **Default dosing.** ``default_dosing`` lists :class:`Dose` s applied when an experiment
  gives no dosing schedule of its own.
- **Parameter overrides.** :func:`overriding` makes ``system.param(name)`` return given
  values for the duration of a ``with`` block: how an experiment's condition (a dose, a
  temperature, a condition-specific scale) replaces the shared value, differentiably.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from physode.errors import InvalidSystem
from physode.model.state import Layout, StateVar

InputFn = Callable[[Tensor], Tensor]

#: Per-thread tables ``{id(system): {name: value}}`` of the active overrides and inputs:
#: two threads evaluating one system (an executor of threads) never see each other's.
_LOCAL = threading.local()
#: How many override blocks are open in any thread: when none (the common case, and always
#: inside a compiled solve of the plain system) ``param`` skips the thread-local lookup.
_OPEN = [0]


def _table(kind: str) -> dict[int, dict[str, Any]]:
    table: dict[int, dict[str, Any]] | None = getattr(_LOCAL, kind, None)
    if table is None:
        table = {}
        setattr(_LOCAL, kind, table)
    return table


def active_overrides(system: Any) -> Mapping[str, Tensor] | None:
    """The parameter values :func:`overriding` sets for ``system`` in this thread."""
    if not _OPEN[0]:
        return None
    return _table("overrides").get(id(system))


@dataclass(frozen=True)
class Dose:
    """A bolus: at ``time`` add ``amount`` to state variable ``target`` (component
    ``index`` of it, flat C-order position, when the variable is not a scalar).

    ``amount`` is a number or the name of a parameter of the system (so a dose may be a
    condition value or be fitted)."""

    time: float
    amount: float | str
    target: str
    index: int | None = None

    def __post_init__(self) -> None:
        t = float(self.time)
        if not math.isfinite(t):
            raise InvalidSystem(f"dose time must be finite, got {self.time!r}")
        object.__setattr__(self, "time", t)
        if isinstance(self.amount, str):
            if not self.amount.isidentifier():
                raise InvalidSystem(f"dose amount {self.amount!r} is neither a number nor a "
                                    "parameter name")
        else:
            a = float(self.amount)
            if not math.isfinite(a):
                raise InvalidSystem(f"dose amount must be finite, got {self.amount!r}")
            object.__setattr__(self, "amount", a)
        if self.index is not None:
            object.__setattr__(self, "index", int(self.index))


class ExperimentHooks:
    """Mixin of :class:`~physode.model.system.System`: observables, inputs, default dosing.

    Class attributes a subclass may set: ``observable_vars`` (tuple of StateVar),
    ``input_names`` (tuple of str), ``default_dosing`` (tuple of :class:`Dose`).
    """

    observable_vars: Sequence[StateVar] = ()
    input_names: Sequence[str] = ()
    default_dosing: Sequence[Dose] = ()

    def observables(self, t: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Derived quantities ``{name: (*batch, *shape)}`` of the named ``state`` at times
        ``t`` (``t`` has the state's batch shape); written by subclasses that declare
        ``observable_vars``."""
        return {}

    @property
    def observable_by_name(self) -> dict[str, StateVar]:
        """The declared observables (shapes, dimensions, units) by name."""
        return {v.name: v for v in self.observable_vars}

    @property
    def observable_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.observable_vars)

    def output_var(self, name: str) -> StateVar | None:
        """The declaration of ``name`` as a state variable or an observable, else None."""
        layout: Layout = getattr(self, "layout")  # noqa: B009 - System defines it
        var = layout.by_name.get(name)
        if var is not None:
            return var
        return self.observable_by_name.get(name)

    def evaluate_observables(self, t: Tensor, state: dict[str, Tensor],
                             names: Sequence[str]) -> dict[str, Tensor]:
        """The observables ``names`` at ``t``, checked against their declarations."""
        if not names:
            return {}
        values = self.observables(t, state)
        out = {}
        for name in names:
            if name not in values:
                raise InvalidSystem(f"{type(self).__name__}.observables returned no "
                                    f"{name!r} (it returned {sorted(values)})")
            out[name] = values[name]
        return out

    def input(self, name: str, t: Tensor) -> Tensor:
        """The value at ``t`` of the input (forcing) ``name`` of the current experiment."""
        active: Mapping[str, InputFn] | None = _table("inputs").get(id(self))
        if active is None or name not in active:
            given = sorted(active) if active else []
            raise InvalidSystem(f"{type(self).__name__} reads the input {name!r}, but the "
                                f"experiment gives no input series of that name (inputs "
                                f"given: {given}); add it to the experiment's inputs")
        return active[name](t)


@contextmanager
def overriding(system: Any, values: Mapping[str, Tensor]) -> Iterator[None]:
    """Within the block ``system.param(name)`` (and ``self.<name>`` in the vector field)
    returns ``values[name]`` for the names given; nested blocks combine, inner first."""
    table = _table("overrides")
    old = table.get(id(system))
    merged = dict(old or {})
    merged.update(values)
    table[id(system)] = merged
    _OPEN[0] += 1
    try:
        yield
    finally:
        _OPEN[0] -= 1
        if old is None:
            table.pop(id(system), None)
        else:
            table[id(system)] = old


@contextmanager
def using_inputs(system: Any, inputs: Mapping[str, InputFn]) -> Iterator[None]:
    """Within the block ``system.input(name, t)`` reads ``inputs[name](t)``."""
    table = _table("inputs")
    old = table.get(id(system))
    table[id(system)] = dict(inputs)
    try:
        yield
    finally:
        if old is None:
            table.pop(id(system), None)
        else:
            table[id(system)] = old


__all__ = ["Dose", "ExperimentHooks", "InputFn", "active_overrides", "overriding",
           "using_inputs"]
