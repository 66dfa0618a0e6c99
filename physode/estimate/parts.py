"""The plain-data parts of a fit's outcome (estimate, convergence, trajectories) and
:class:`FitParts`, the protocol the report, the plots and the export read them through.

A :class:`~physode.estimate.result.FitResult` is made of these parts plus
:class:`~physode.estimate.uncertainty.Uncertainty`,
:class:`~physode.estimate.uncertainty.Statistics` and
:class:`~physode.estimate.settings.FitSettings`; the modules that present a fit depend on
the parts, never on the result class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from physode.data.observations import Observations
from physode.estimate.settings import FitSettings
from physode.estimate.uncertainty import Statistics, Uncertainty
from physode.model.system import System


@dataclass
class Estimate:
    """The fitted values: one entry per fitted physical scalar in ``labels`` order, and
    every parameter of the system by name."""

    labels: list[str]
    values: np.ndarray
    initial_values: np.ndarray
    bounds: list[tuple[float, float]]
    units: list[str | None]
    #: ``{name: physical value}`` of every parameter (fixed ones included)
    params: dict[str, np.ndarray]
    #: ``{name: value}`` of the fixed parameters
    fixed: dict[str, np.ndarray] = field(default_factory=dict)
    #: ``{label: true value}`` when the observations record the truth (simulated data)
    truth: dict[str, float] = field(default_factory=dict)
    #: ``{free name: shape}`` (``"y0.<var>"`` included): how labels group into names
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: what was minimised: ``kind``, ``value``, ``priors``, ``noise``
    #: (:func:`physode.estimate.likelihood.describe_objective`)
    objective: dict[str, Any] = field(default_factory=dict)

    def by_name(self, per_label: np.ndarray) -> dict[str, np.ndarray]:
        """``per_label`` (one entry per label) regrouped as ``{free name: array of its
        shape}``."""
        out, offset = {}, 0
        for name, shape in self.shapes.items():
            n = int(np.prod(shape, dtype=np.int64))
            out[name] = np.asarray(per_label[offset:offset + n]).reshape(shape)
            offset += n
        return out


#: How a fit ended. Only "converged" (a tolerance test was met at a point where the model
#: can be solved, and the model responds to the parameters there) counts as success.
STATUS_TEXT = {
    "converged": "success (converged)",
    "max_iter": "not converged (iteration limit)",
    "stalled": "not converged (no further progress)",
    "flat": "not converged (the model does not respond to the parameters here)",
    "failed": "failed",
    "stopped": "stopped by the callback",
    "interrupted": "interrupted (best so far)",
}


@dataclass
class Convergence:
    """How the optimiser ran and why it stopped."""

    status: str
    stop_reason: str
    niter: int
    nfev: int
    ngrad: int
    wall_time: float
    #: chi2 per iteration of the best start
    history: list[float] = field(default_factory=list)
    #: one record per start: its initial values and outcome
    starts: list[dict[str, Any]] = field(default_factory=list)
    #: why the model could not be solved (solver message, with its stiffness hint), if so
    failure: str | None = None

    @property
    def success(self) -> bool:
        return self.status == "converged"

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"

    @property
    def status_text(self) -> str:
        return STATUS_TEXT.get(self.status, self.status)


@dataclass
class Trajectories:
    """Fitted states: at the observation times and on a fine grid, one array per experiment
    (``(n_t, state_size)``); empty when the model could not be solved at the estimate."""

    fitted: list[np.ndarray] = field(default_factory=list)
    fine_t: list[np.ndarray] = field(default_factory=list)
    fine_states: list[np.ndarray] = field(default_factory=list)
    #: every observed output (states and observables) at the observation times, one
    #: ``{name: (n_t, *shape)}`` per experiment
    outputs: list[dict[str, np.ndarray]] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return bool(self.fitted)


class FitParts(Protocol):
    """What presenting a fit needs (satisfied by :class:`~physode.estimate.result.FitResult`)."""

    system: System
    observations: Observations
    estimate: Estimate
    uncertainty: Uncertainty
    statistics: Statistics
    convergence: Convergence
    settings: FitSettings
    trajectories: Trajectories


def system_name(system: System) -> str:
    """The registry name of ``system``, else ``"module:Class"``."""
    cls = type(system)
    return system.registry_name or f"{cls.__module__}:{cls.__qualname__}"


__all__ = ["STATUS_TEXT", "Convergence", "Estimate", "FitParts", "Trajectories",
           "system_name"]
