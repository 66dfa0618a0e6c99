"""Experimental conditions in a fit: per-experiment parameter values and the fields they give.

An experiment may set some parameters to its own values (PEtab v1's condition table):
a known number (a dose, a temperature, an initial amount) or the name of another
parameter (a condition-specific, fitted one: ``{"scale": "scale_exp1"}``). The system
keeps one set of shared parameters; for an experiment, :class:`Condition` computes the
overriding values (differentiably: a reference reads the referenced parameter) and
:func:`physode.model.observables.overriding` makes ``self.<name>`` in the vector field and
the observables return them. :class:`ConditionedField` is the vector field of one
experiment (its condition and its inputs applied) as an ``nn.Module`` whose parameters are
the system's, so every gradient mode (ACA, direct, adjoint) and the forward sensitivities
work on it unchanged.

:func:`prepare_experiments` is the explicit step (called by :func:`physode.fit`, like
:func:`~physode.estimate.problem.prepare_initial_states`) that adds to the system the
parameters the observations declare (estimated noise coefficients, condition-specific
parameters) and fixes a shared parameter that every experiment overrides (it would
otherwise be a direction the data cannot see).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from physode.data.observations import Experiment, Observations
from physode.errors import InvalidObservations
from physode.model.observables import overriding
from physode.model.system import System


class Condition:
    """The parameter values one experiment sets (see the module docstring).

    ``values``: ``{parameter: number, array or parameter name}``; ``where`` names the
    experiment for errors.
    """

    def __init__(self, system: System, values: Mapping[str, Any], where: str,
                 device: torch.device | None = None) -> None:
        specs = system.parameter_specs()
        self.known: dict[str, Tensor] = {}
        self.refs: dict[str, str] = {}
        for name, value in values.items():
            if name not in specs:
                raise InvalidObservations(f"{where}: condition sets {name!r}, which is not a "
                                          f"parameter of {type(system).__name__} (its "
                                          f"parameters: {list(specs)})")
            if isinstance(value, str):
                if value not in specs:
                    raise InvalidObservations(f"{where}: condition {name!r} refers to "
                                              f"{value!r}, which is not a parameter of "
                                              f"{type(system).__name__}")
                if specs[value].shape != specs[name].shape:
                    raise InvalidObservations(f"{where}: condition {name!r} of shape "
                                              f"{specs[name].shape} refers to {value!r} of "
                                              f"shape {specs[value].shape}")
                self.refs[name] = value
            else:
                arr = torch.as_tensor(np.asarray(value, dtype=np.float64), device=device)
                if arr.numel() == 1 and specs[name].value.numel() == 1:
                    arr = arr.reshape(specs[name].shape)
                if arr.shape != specs[name].value.shape:
                    raise InvalidObservations(f"{where}: condition {name!r} has shape "
                                              f"{tuple(arr.shape)}, the parameter "
                                              f"{specs[name].shape}")
                self.known[name] = arr
        self.key = (tuple(sorted((k, tuple(v.reshape(-1).tolist()))
                                 for k, v in self.known.items())),
                    tuple(sorted(self.refs.items())))

    def __bool__(self) -> bool:
        return bool(self.known or self.refs)

    def values(self, system: System) -> dict[str, Tensor]:
        """The overriding values now (a reference reads its parameter, differentiably)."""
        out = dict(self.known)
        for name, ref in self.refs.items():
            out[name] = system.param(ref)
        return out

    @contextmanager
    def applied(self, system: System) -> Iterator[None]:
        """Within the block the system reads this condition's values."""
        if not self:
            yield
            return
        with overriding(system, self.values(system)):
            yield


class Applicable(Protocol):
    """What a :class:`ConditionedField` applies: an experiment's setup."""

    def applied(self, system: System) -> AbstractContextManager[None]: ...


class ConditionedField(nn.Module):
    """The vector field of ``system`` under one experiment's setup; its parameters are
    the system's (registered as the submodule ``system``)."""

    def __init__(self, system: System, setup: Applicable) -> None:
        super().__init__()
        self.system = system
        self.setup = setup

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        with self.setup.applied(self.system):
            out: Tensor = self.system(t, y)
        return out


def condition_of(system: System, exp: Experiment, device: torch.device | None = None
                 ) -> Condition:
    """The :class:`Condition` of ``exp``, checked against ``system``."""
    return Condition(system, exp.conditions, f"experiment {exp.name!r}, field 'conditions'",
                     device)


def prepare_experiments(system: System, observations: Observations) -> list[str]:
    """Add the parameters ``observations.declarations`` declares and the system lacks, and
    fix the free parameters that every experiment's condition overrides. Changes
    ``system``; returns the names fixed. :func:`physode.fit` calls it."""
    specs = system.parameter_specs()
    for name, spec in observations.declarations.items():
        if name not in specs:
            system.add_parameter(name, spec)
    specs = system.parameter_specs()
    exps = observations.experiments
    always = [n for n, s in specs.items() if not s.fixed and exps
              and all(n in e.conditions for e in exps)]
    if always:
        system.fix(*always)
    return always


__all__ = ["Applicable", "Condition", "ConditionedField", "condition_of",
           "prepare_experiments"]
