"""A loaded PEtab model as physode objects: :func:`as_system` (a :class:`physode.System`)
and :func:`as_observations` (one :class:`physode.Experiment` per simulation).

The System's state variables are the model's states, its parameters the model
parameters with the values of the first simulation condition (estimated ones free,
others fixed); ``system(t, y)`` is the generated vector field and ``system.jacobian`` /
``system.time_derivative`` the generated derivatives, so physode's solvers, simulate and
ensembles run the SBML model directly; ``system.sensitivity_model()`` gives least-squares
fits the staggered forward sensitivities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from physode.data.observations import Experiment, Observations
from physode.errors import InvalidSystem
from physode.model.parameter import Parameter
from physode.model.state import StateVar
from physode.model.system import System
from physode.ode.sensitivity_batch import SensitivityField, SensitivityModel
from physode.petab.cache import GeneratedModel


class SbmlSystem(System):
    """A generated SBML model as a System (see the module docstring)."""

    def __init__(self, model: GeneratedModel, values: dict[str, float],
                 free: set[str]) -> None:
        super().__init__()
        self.model = model
        self.state_vars = tuple(StateVar(s) for s in model.states)
        # PEtab observables (their formulas without placeholder parameters): what an
        # experiment of as_observations measures, so the data validate against the system
        self.observable_vars = tuple(StateVar(o) for o in model.observables)
        self.names = [*model.parameters, *model.extras]
        for name in self.names:
            value = values.get(name, float("nan"))
            try:
                self.add_parameter(name, Parameter(value, fixed=name not in free,
                                                   positive=name in free and value > 0))
            except InvalidSystem as exc:
                raise InvalidSystem(f"SBML model {model.id!r}: parameter {name!r} cannot be a "
                                    f"System parameter ({exc})") from None

    def _p(self) -> Tensor:
        return torch.stack([self.param(n).reshape(()) for n in self.names])

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.model.rhs(t, y, self._p())

    def jacobian(self, t: Tensor, y: Tensor) -> Tensor:
        """df/dy from the generated symbolic Jacobian."""
        return self.model.jacobian(t, y, self._p())

    def time_derivative(self, t: Tensor, y: Tensor) -> Tensor:
        """df/dt from the generated symbolic derivative."""
        return self.model.time_derivative(t, y, self._p())

    def sensitivity_model(self) -> SensitivityModel:
        """The generated closed forms (Jacobians and their second-order blocks, the ones
        the batched PEtab fit uses) with this system's parameter vector: least-squares fits
        with ``rodas4`` or ``rodas5p`` integrate their sensitivities staggered
        (:mod:`physode.estimate.staggered`)."""
        model = self.__dict__.get("_sensitivity_model")
        if model is None:  # one field per system: compiled kernels are cached by field
            m = self.model.module
            field = SensitivityField(m.rhs, m.jacobian, m.param_jacobian, bool(m.AUTONOMOUS),
                                     m.jacobian_dir, m.param_jacobian_dir, m.time_derivative,
                                     m.jacobian_dt, m.param_jacobian_dt)
            model = SensitivityModel(field, self._p)
            self.__dict__["_sensitivity_model"] = model
        return model

    def observables(self, t: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The PEtab observables from the generated formulas. A formula with placeholder
        parameters (``observableParameter<k>_<id>``) has values per measurement row, not
        per system: it is an error here (the PEtab objective evaluates it)."""
        x = torch.stack([state[n] for n in self.model.states], dim=-1)
        p = self._p()
        out: dict[str, Tensor] = {}
        for k, oid in enumerate(self.model.observables):
            fn = self.model.observable(k)
            if any(n.startswith("op_") for n in fn.__code__.co_varnames):
                raise InvalidSystem(f"SBML model {self.model.id!r}: observable {oid!r} has "
                                    "placeholder parameters set per measurement; evaluate it "
                                    "through the PEtab problem")
            y = fn(t, x, p, x.new_zeros(0))
            out[oid] = y.expand(t.shape) if isinstance(y, Tensor) else t.new_full(
                t.shape, float(y))
        return out

    def initial_state(self) -> Tensor:
        """The model's initial state at the current parameter values."""
        return self.model.initial(self._p())


def as_system(problem: Any) -> SbmlSystem:
    """The problem's model as a System at the first simulation's nominal values."""
    obj = problem.objective
    lin = obj.lin_values(problem.theta())
    p = obj.gather(lin, obj.simulations[0].params) if obj.simulations else torch.tensor(
        problem.model.defaults, dtype=torch.float64)
    names = [*problem.model.parameters, *problem.model.extras]
    values = {n: float(v) for n, v in zip(names, p)}
    system = SbmlSystem(problem.model, values, set(problem.free_ids))
    with torch.no_grad():
        system.y0 = system.initial_state()
    return system


def as_observations(problem: Any) -> Observations:
    """One Experiment per simulation: observables on the sorted finite measurement times
    (replicates averaged, missing points masked), sigma where the noise is a number."""
    obj = problem.objective
    m = obj.measurements
    experiments = []
    for s, sim in enumerate(obj.simulations):
        rows = np.flatnonzero(obj.sim_of_row == s)
        times = np.array(sim.times, dtype=float)
        if not len(times):
            continue
        values: dict[str, np.ndarray] = {}
        for oid in dict.fromkeys(m["observableId"].to_numpy()[rows]):
            v = np.full(len(times), np.nan)
            sub = m.iloc[rows]
            sub = sub[(sub["observableId"] == oid) & np.isfinite(sub["time"].astype(float))]
            for j, t in enumerate(times):
                at = sub["measurement"].to_numpy(dtype=float)[sub["time"].to_numpy(float) == t]
                if len(at):
                    v[j] = float(np.mean(at))
            values[str(oid)] = v
        name = sim.condition if sim.preequilibration is None else \
            f"{sim.preequilibration}__{sim.condition}"
        experiments.append(Experiment(
            t=times, values={k: np.nan_to_num(v) for k, v in values.items()},
            mask={k: np.isnan(v) for k, v in values.items()}, name=name, t0=0.0,
            metadata={"petab_condition": sim.condition,
                      "petab_preequilibration": sim.preequilibration or ""}))
    # labelled with the SbmlSystem class: the file reads back with the problem's system,
    # physode.load_observations(path, system=problem.system)
    return Observations(system=f"{SbmlSystem.__module__}:{SbmlSystem.__qualname__}",
                        experiments=experiments,
                        metadata={"petab_problem": problem.name,
                                  "sbml_model": problem.model.id})


def fitted_outputs(problem: Any, theta: Tensor) -> tuple[list[np.ndarray],
                                                       list[dict[str, np.ndarray]]]:
    """The states and the observables at ``theta``, aligned with :func:`as_observations`:
    per experiment (a simulation with finite measurement times) ``(n_t, n_states)`` and
    ``{observable: (n_t,)}`` on its sorted times (replicate rows averaged, as the data)."""
    obj = problem.objective
    with torch.no_grad():
        preds = obj.predictions(theta, problem.options, grad=False)
        xs = obj.states(theta, problem.options, grad=False)
    m = obj.measurements
    times_col = m["time"].to_numpy(dtype=float)
    fitted: list[np.ndarray] = []
    outputs: list[dict[str, np.ndarray]] = []
    for s, sim in enumerate(obj.simulations):
        if not sim.times:
            continue
        fitted.append(xs[s][:len(sim.times)].numpy())
        out: dict[str, np.ndarray] = {}
        for g, y, _ in preds:
            mine = obj.sim_of_row[g.rows] == s
            if not mine.any():
                continue
            v = np.full(len(sim.times), np.nan)
            t_rows, y_rows = times_col[g.rows][mine], y.numpy()[mine]
            for j, t in enumerate(sim.times):
                at = y_rows[t_rows == t]
                if len(at):
                    v[j] = float(np.mean(at))
            out[g.id] = np.nan_to_num(v)
        outputs.append(out)
    return fitted, outputs


__all__ = ["SbmlSystem", "as_observations", "as_system", "fitted_outputs"]
