"""An experiment's protocol in a fit: dosing events, input series and pre-equilibration.

The data layer holds a protocol as data (:mod:`physode.data.experiment_parts`); this
module turns it into what the engine solves:

- each :class:`~physode.model.observables.Dose` becomes a
  :class:`physode.events.AtTime` adding the amount to its target (the solver restarts
  there; gradients, ACA or direct, are exact through the jump, also with respect to a
  dose that is a parameter). For the forward sensitivities of Levenberg-Marquardt the
  jump of the augmented state ``[y, S]`` is ``S+ = S- + d amount/d theta`` at the target
  (the sensitivity of a bolus; Hairer, Nørsett & Wanner, *Solving ODEs I*, I.14, applied
  to the restarted problem);
- each :class:`~physode.data.experiment_parts.InputSeries` becomes a
  :class:`physode.model.inputs.Input`; their knots are the solver's ``tstops``;
- pre-equilibration: the initial state is the steady state
  (:func:`physode.ode.steady.steady_state`, Newton with an integration fallback) of the
  system under the pre-condition, started from the experiment's initial state (which fixes
  conserved totals); its derivative comes from the implicit function theorem
  (``dy*/dtheta = -f_y^{-1} f_theta``), never from differentiating the iterations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from physode.data.observations import Experiment
from physode.errors import InvalidObservations, SolverError
from physode.estimate.conditions import Condition, condition_of
from physode.model.inputs import Input
from physode.model.observables import Dose, using_inputs
from physode.model.system import System
from physode.ode.events import AtTime, Event
from physode.ode.steady import steady_state


def make_inputs(exp: Experiment, device: torch.device) -> dict[str, Input]:
    """The engine's interpolants of the experiment's input series."""
    out = {}
    for name, s in exp.inputs.items():
        problem = s.problem()
        if problem is not None:
            raise InvalidObservations(f"experiment {exp.name!r}, field 'inputs', series "
                                      f"{name!r}: {problem}")
        values = torch.as_tensor(s.values, dtype=torch.float64, device=device)
        out[name] = Input(s.times, values, s.kind, name=f"{exp.name}/{name}").to(device)
    return out


def inputs_key(exp: Experiment) -> tuple[object, ...]:
    """Identity of the experiment's inputs as data (experiments with equal ones batch)."""
    return tuple((k, s.kind, s.times.tobytes(), np.asarray(s.values).tobytes())
                 for k, s in exp.inputs.items())


def tstops(inputs: dict[str, Input], t0: float, t1: float) -> list[float]:
    """The knots of every input strictly inside ``(t0, t1)``: where no step may straddle."""
    knots: set[float] = set()
    for u in inputs.values():
        knots.update(x for x in u.breakpoints.tolist() if t0 < x < t1)
    return sorted(knots)


def doses_of(system: System, exp: Experiment) -> list[Dose]:
    """The experiment's dosing schedule, else the system's default one."""
    return list(exp.dosing) if exp.dosing else sorted(system.default_dosing,
                                                      key=lambda d: d.time)


class DoseEvents:
    """The dosing schedule of one experiment as engine events.

    An amount that names a parameter is read live when the event fires (so gradients
    reach it); the experiment's ``condition`` may set that parameter to a number or to
    another parameter.
    """

    def __init__(self, system: System, doses: Sequence[Dose], condition: Condition,
                 where: str) -> None:
        self.system = system
        self.doses = list(doses)
        self.condition = condition
        layout = system.layout
        self.positions = []
        for d in self.doses:
            sl = layout.slices.get(d.target)
            if sl is None:
                raise InvalidObservations(f"{where}, field 'dosing': target {d.target!r} is "
                                          f"not a state variable ({list(layout.names)})")
            self.positions.append(sl.start + (d.index or 0))
        self.key = tuple((d.time, d.amount, d.target, d.index) for d in self.doses)

    def _source(self, dose: Dose) -> str | float:
        """The parameter an amount reads (after the condition), or its known value."""
        if not isinstance(dose.amount, str):
            return dose.amount
        known = self.condition.known.get(dose.amount)
        if known is not None:
            return float(known.reshape(-1)[0])
        return self.condition.refs.get(dose.amount, dose.amount)

    def events(self, span: tuple[float, float],
               sens: tuple[dict[str, Tensor], int] | None = None) -> list[Event]:
        """``AtTime`` events of the doses inside ``span`` (ends included; a dose after
        the last observation changes nothing observed). ``sens = (tangents, P)``: act on
        the augmented state ``[y, S]`` of the forward sensitivities instead."""
        return [AtTime(d.time, self._apply(d, pos, sens))
                for d, pos in zip(self.doses, self.positions) if span[0] <= d.time <= span[1]]

    def _apply(self, dose: Dose, pos: int, sens: tuple[dict[str, Tensor], int] | None
               ) -> Callable[[Tensor, Tensor], Tensor]:
        system = self.system
        n = system.state_size
        source = self._source(dose)

        def bolus(t: Tensor, y: Tensor) -> Tensor:
            a = system.param(source).to(y) if isinstance(source, str) else torch.tensor(
                source, dtype=y.dtype, device=y.device)
            e = torch.zeros(y.shape[-1], dtype=y.dtype, device=y.device)
            e[pos] = 1.0
            out = y + a * e
            da = self._derivative(source, sens) if sens is not None else None
            if da is not None:
                jump = torch.zeros(da.shape[0], n, dtype=y.dtype, device=y.device)
                jump[:, pos] = da.to(y)
                out = out + torch.cat([torch.zeros(n, dtype=y.dtype, device=y.device),
                                       jump.reshape(-1)])
            return out

        return bolus

    def _derivative(self, source: str | float, sens: tuple[dict[str, Tensor], int]
                    ) -> Tensor | None:
        """d amount / d (fitted vector), or None when the amount is not fitted."""
        tangents, P = sens
        raw_key = f"_raw.{source}"
        if not isinstance(source, str) or raw_key not in tangents:
            return None
        spec = self.system.parameter_specs()[source]
        raw = dict(self.system.named_parameters())[raw_key].detach().clone()
        with torch.enable_grad():
            raw.requires_grad_(True)
            (dxdu,) = torch.autograd.grad(spec.to_physical(raw).sum(), raw)
        return tangents[raw_key].reshape(P) * dxdu.reshape(())


class ExperimentSetup:
    """Everything that makes one experiment's model differ from the shared one: its
    condition, its inputs, its dosing and its pre-equilibration condition."""

    def __init__(self, system: System, exp: Experiment, device: torch.device) -> None:
        where = f"experiment {exp.name!r}"
        self.condition = condition_of(system, exp, device)
        self.inputs = make_inputs(exp, device)
        self.doses = DoseEvents(system, doses_of(system, exp), self.condition, where)
        self.preeq = None if exp.preequilibration is None else Condition(
            system, exp.preequilibration, f"{where}, field 'preequilibration'", device)
        self.key = (self.condition.key, inputs_key(exp), self.doses.key,
                    None if self.preeq is None else self.preeq.key)

    @property
    def trivial(self) -> bool:
        """Nothing differs from the shared model (the system itself is the field)."""
        return not self.condition and not self.inputs

    @contextmanager
    def applied(self, system: System) -> Iterator[None]:
        """Within the block the system reads this experiment's condition and inputs."""
        with ExitStack() as stack:
            if self.inputs:
                stack.enter_context(using_inputs(system, self.inputs))
            stack.enter_context(self.condition.applied(system))
            yield

    def solve_options(self, base: dict[str, Any] | None, span: tuple[float, float],
                      sens: tuple[dict[str, Tensor], int] | None = None
                      ) -> tuple[dict[str, Any] | None, list[Event] | None]:
        """Solver options (``tstops`` at the inputs' knots) and dosing events for a solve
        over ``span``."""
        stops = tstops(self.inputs, *span)
        events = self.doses.events(span, sens)
        options = base
        if stops:
            options = dict(base or {})
            options["tstops"] = sorted(set(stops) | set(options.get("tstops") or ()))
        return options, events or None


class PreequilibrationSetup:
    """The pre-condition of an experiment as a setup (no inputs, no dosing)."""

    def __init__(self, condition: Condition) -> None:
        self.condition = condition

    def applied(self, system: System) -> AbstractContextManager[None]:
        return self.condition.applied(system)


def steady_initial_state(field: nn.Module, y0: Tensor, t0: float, where: str) -> Tensor:
    """The steady state of ``field`` reached from ``y0`` (IFT gradients); a failure is a
    :class:`~physode.errors.SolverError` naming the experiment and field."""
    try:
        return steady_state(field, y0, t=t0)
    except SolverError as exc:
        raise SolverError(f"{where}, field 'preequilibration': {exc}", exc.t) from exc


__all__ = ["DoseEvents", "ExperimentSetup", "PreequilibrationSetup", "doses_of", "inputs_key",
           "make_inputs", "steady_initial_state", "tstops"]
