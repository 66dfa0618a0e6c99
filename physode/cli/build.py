"""The system a command works on: from the registry (or the data file's definition), with
``--set`` overrides of parameters *and* initial-state values, ``--fix`` and ``--free``.

``--set NAME=VALUE`` names a parameter (``--set beta=0.3``), a setting (``--set
y0=0.99,0.01,0``), a state variable (``--set I=0.05`` for a scalar variable ``I``, or
``--set velocity=0,0,...`` for a whole array one), or a coordinate label of a
one-dimensional state variable (``--set I=0.05`` for the species ``I`` of a reaction
network's ``concentration``): the last two change the reference initial state.
A system defined by data (a reaction network from strings) is rebuilt from the arguments
its data file stores (:func:`physode.data.schema.system_args`) when the command names
the file's system.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from physode.data.observations import Observations
from physode.data.schema import system_args
from physode.errors import InvalidArgument
from physode.model import registry
from physode.model.system import System

#: Overrides that :meth:`physode.System.configure` takes besides parameters.
SETTINGS = ("y0", "t_span", "unknown_initial_state")


def _state_target(system: System, name: str) -> tuple[str, int | None] | None:
    """``(variable, position)`` for a state variable name (position None: all of it) or a
    coordinate label of a 1-D state variable; None when ``name`` is neither."""
    layout = system.layout
    if name in layout.by_name:
        return name, None
    for var in layout.variables:
        if len(var.dims) == 1:
            labels = [str(c) for c in var.coords.get(var.dims[0], ())]
            if name in labels:
                return var.name, labels.index(name)
    return None


def split_overrides(system: System, overrides: Mapping[str, Any]
                    ) -> tuple[dict[str, Any], dict[str, tuple[str, int | None, Any]]]:
    """``(parameters and settings, {name: (variable, position, value)})``: the overrides
    that go to the registry, and those that set initial-state values of ``system``."""
    specs = system.parameter_specs()
    rest: dict[str, Any] = {}
    initial: dict[str, tuple[str, int | None, Any]] = {}
    for name, value in overrides.items():
        target = None if name in specs or name in SETTINGS else _state_target(system, name)
        if target is None:
            rest[name] = value
        else:
            initial[name] = (*target, value)
    return rest, initial


def set_initial_values(system: System, initial: Mapping[str, tuple[str, int | None, Any]]
                       ) -> None:
    """Write ``--set`` initial-state values into the system's reference ``y0`` (unknown
    variables stay unknown, starting from the new value)."""
    if not initial:
        return
    y0 = system.y0
    if y0 is None:
        raise InvalidArgument(f"--set {', '.join(initial)}: {type(system).__name__} has no "
                              "reference initial state to change; give --set y0=... first")
    state = {k: v.detach().clone() for k, v in system.layout.unpack(y0.detach()).items()}
    for name, (var, pos, value) in initial.items():
        new = torch.as_tensor(value, dtype=state[var].dtype)
        target = state[var] if pos is None else state[var][..., pos]
        if new.numel() not in (1, target.numel()):
            raise InvalidArgument(f"--set {name}: {target.numel()} value(s) expected for "
                                  f"{'state variable ' + repr(var) if pos is None else name!r}, "
                                  f"got {new.numel()}")
        if pos is None:
            state[var] = new.reshape(()).expand_as(target).clone() if new.numel() == 1 \
                else new.reshape(target.shape)
        else:
            state[var][..., pos] = new.reshape(())
    system.set_initial_state(system.layout.pack(state))


def build_system(name: str, overrides: Mapping[str, Any], *, fix: Sequence[str] = (),
                 free: Sequence[str] = (), data: Observations | None = None) -> System:
    """The system ``name`` (rebuilt from ``data``'s stored arguments when ``name`` is the
    system the data were written for), with ``overrides`` applied (parameters, settings,
    initial-state values), the parameters ``fix`` fixed and ``free`` made free."""
    args = system_args(data, "DATA.h5") if data is not None and data.system == name else {}
    probe = registry.get(name, **args)
    rest, initial = split_overrides(probe, overrides)
    clash = sorted(set(rest) & set(args))
    if clash:  # an override of a stored argument replaces it
        args = {k: v for k, v in args.items() if k not in clash}
    system = registry.get(name, **args, **rest) if rest or args else probe
    set_initial_values(system, initial)
    both = sorted(set(fix) & set(free))
    if both:
        raise InvalidArgument(f"--fix and --free both name {both}")
    system.fix(*fix)
    system.unfix(*free)
    return system


__all__ = ["SETTINGS", "build_system", "set_initial_values", "split_overrides"]
