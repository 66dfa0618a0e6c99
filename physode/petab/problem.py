"""``physode.petab.load(yaml) -> PetabProblem``: a PEtab v1 problem ready to evaluate and fit.

The tables are read with the ``petab`` library (Schmiester et al., PLoS Comput Biol
17:e1008646, 2021); the SBML model is turned into generated torch code once and cached
(:mod:`physode.petab.cache`). :meth:`PetabProblem.nllh` is PEtab's negative
log-likelihood (normalisation constants included, priors excluded) — the number AMICI
reports as ``-llh``; :meth:`PetabProblem.fit` minimises it plus the priors on the
parameters' PEtab scales (:mod:`physode.petab.fitting`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from petab.v1 import (
    get_condition_df,
    get_measurement_df,
    get_observable_df,
    get_parameter_df,
)

from physode.data.observations import Observations
from physode.errors import InvalidArgument, InvalidObservations
from physode.estimate.result import FitResult
from physode.petab.cache import GeneratedModel, load_model
from physode.petab.fitting import fit_problem
from physode.petab.objective import PetabObjective, lin_to_scale
from physode.petab.simulate import SolverOptions, single_thread
from physode.petab.system import SbmlSystem, as_observations, as_system
from physode.petab.tables import ParameterTable, parameter_table


def _files(spec: dict[str, Any], key: str, base: Path, where: str) -> list[Path]:
    problems = spec.get("problems") or []
    if len(problems) != 1:
        raise InvalidObservations(f"{where}: physode reads PEtab files with exactly one "
                                  f"problem, found {len(problems)}")
    names = problems[0].get(key) or []
    return [base / n for n in names]


class PetabProblem:
    """A loaded PEtab problem (see the module docstring).

    Attributes: ``model`` (the generated code and its metadata), ``table`` (the parameter
    table), ``objective`` (the vectorised likelihood), ``options`` (solver settings), and
    the raw tables ``conditions``, ``measurements``, ``observables``, ``parameters``.

    Every evaluation (``nllh``, ``nllh_and_grad``, ``fit``, the simulation table) runs on
    one torch thread and restores the caller's count afterwards
    (:func:`~physode.petab.simulate.single_thread`): these models are small, and intra-op
    threads only slow their many tiny operations down (40x in the ACA backward pass of
    Boehm_JProteomeRes2014 with the default count). Parallel starts go to ``executor``.
    """

    def __init__(self, path: Path, model: GeneratedModel, conditions: pd.DataFrame,
                 measurements: pd.DataFrame, observables: pd.DataFrame,
                 parameters: pd.DataFrame, options: SolverOptions) -> None:
        self.path = path
        self.name = path.stem
        self.model = model
        self.conditions = conditions
        self.measurements = measurements
        self.observable_table = observables
        self.parameters = parameters
        self.options = options
        self.table: ParameterTable = parameter_table(parameters, str(path))
        self.objective = PetabObjective(model, self.table, conditions, measurements,
                                        observables, self.name)

    # ------------------------------------------------------------------ parameters
    @property
    def free_ids(self) -> list[str]:
        """Ids of the estimated parameters, in the order of ``theta``."""
        return [self.table.ids[i] for i in self.table.free]

    @property
    def nominal(self) -> dict[str, float]:
        """Nominal values of the estimated parameters, linear scale."""
        return {self.table.ids[i]: float(self.table.nominal[i]) for i in self.table.free}

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of ``theta`` on the parameters' PEtab scales."""
        free = self.table.free
        scales = self.objective.free_scales
        return (lin_to_scale(self.table.lower[free], scales),
                lin_to_scale(self.table.upper[free], scales))

    def theta(self, values: Mapping[str, float] | None = None) -> torch.Tensor:
        """``theta`` (scaled) from ``{id: linear value}`` (missing ids: nominal)."""
        values = dict(values or {})
        unknown = set(values) - set(self.table.ids)
        if unknown:
            raise InvalidArgument(f"{self.name}: unknown parameter(s) {sorted(unknown)}; "
                                  f"estimated are {self.free_ids}")
        lin = np.array([float(values.get(pid, self.table.nominal[i]))
                        for pid, i in zip(self.free_ids, self.table.free)])
        return torch.tensor(lin_to_scale(lin, self.objective.free_scales),
                            dtype=torch.float64)

    # ------------------------------------------------------------------ evaluation
    def nllh(self, values: Mapping[str, float] | None = None) -> float:
        """PEtab negative log-likelihood at ``values`` (``{id: linear value}``, default
        the nominal values); normalisation constants included, priors excluded."""
        with single_thread():
            return float(self.objective.nllh(self.theta(values), self.options, grad=False))

    def nllh_and_grad(self, theta: torch.Tensor | np.ndarray,
                      prior: bool = False) -> tuple[float, np.ndarray]:
        """Objective and its gradient in ``theta`` (scaled), by the solver's gradient mode."""
        th = torch.as_tensor(theta, dtype=torch.float64).detach().clone().requires_grad_(True)
        with single_thread():
            value = self.objective.nllh(th, self.options, grad=True)
            if prior:
                value = value + self.objective.prior(th)
            g = self.objective.gradient(value, th)
        return float(value.detach()), g.numpy()

    @property
    def system(self) -> SbmlSystem:
        """The model as a :class:`physode.System` (nominal parameters of the first
        condition); see :mod:`physode.petab.system`."""
        return as_system(self)

    @property
    def observations(self) -> Observations:
        """The measurements as physode Observations, one experiment per simulation."""
        return as_observations(self)

    def fit(self, multistart: int = 10, seed: int = 0,
            executor: Executor | str | None = None, **fit_options: Any) -> FitResult:
        """Fit from ``multistart`` starts drawn uniformly within the bounds on the PEtab
        scale (the first start is the nominal point when ``include_nominal=True``).

        ``fit_options``: ``optimizer`` ("auto": all starts as one batched least-squares
        fit where the problem allows, else L-BFGS-B per start; "lm"; "lbfgs"),
        ``max_iter``, ``ftol``, ``gtol``, ``compile``, ``include_nominal``, ``starts``,
        ``starts_per_task``; see :func:`physode.petab.fitting.fit_problem`. ``executor``:
        None (here), ``"processes"`` or any ``concurrent.futures.Executor`` (a Dask
        client's ``get_executor()``)."""
        with single_thread():
            return fit_problem(self, loader=load, multistart=multistart, seed=seed,
                               executor=executor, **fit_options)

    def simulation_table(self, result: FitResult | Mapping[str, float] | None = None
                         ) -> pd.DataFrame:
        """The measurement table with ``measurement`` replaced by the simulation (PEtab's
        simulation-table format) at a fit's estimate, a ``{id: value}`` dict or nominal."""
        values = _values_of(result)
        with torch.no_grad(), single_thread():
            preds = self.objective.predictions(self.theta(values), self.options, grad=False)
        table = self.measurements.copy().reset_index(drop=True)
        sim = np.full(len(table), np.nan)
        for g, y, _ in preds:
            sim[g.rows] = y.numpy()
        table = table.rename(columns={"measurement": "simulation"})
        table["simulation"] = sim
        return table

    def to_xarray(self, result: FitResult | Mapping[str, float] | None = None) -> Any:
        """Measurements, simulation and noise per observable as an xarray Dataset (dim
        ``measurement``), with the condition, observable and time of each row."""
        import xarray as xr
        values = _values_of(result)
        with torch.no_grad(), single_thread():
            preds = self.objective.predictions(self.theta(values), self.options, grad=False)
        n = len(self.objective.measurements)
        sim, sigma = np.full(n, np.nan), np.full(n, np.nan)
        for g, y, s in preds:
            sim[g.rows], sigma[g.rows] = y.numpy(), s.numpy()
        m = self.objective.measurements
        return xr.Dataset(
            {"measurement": ("measurement", m["measurement"].to_numpy(dtype=float)),
             "simulation": ("measurement", sim), "sigma": ("measurement", sigma)},
            coords={"observable": ("measurement", m["observableId"].astype(str).to_numpy()),
                    "condition": ("measurement",
                                  m["simulationConditionId"].astype(str).to_numpy()),
                    "time": ("measurement", m["time"].to_numpy(dtype=float))},
            attrs={"problem": self.name, "model": self.model.id})

    def __repr__(self) -> str:
        return (f"PetabProblem({self.name!r}: {len(self.model.states)} states, "
                f"{len(self.free_ids)} estimated parameters, "
                f"{len(self.objective.simulations)} simulations, "
                f"{len(self.measurements)} measurements)")


def _values_of(result: Any) -> dict[str, float] | None:
    if result is None or isinstance(result, Mapping):
        return None if result is None else dict(result)
    return {k: float(np.asarray(v)) for k, v in result.params.items()}


def _table(read: Any, files: list[Path], index: bool = True) -> pd.DataFrame:
    """One PEtab table from its files (read by ``petab``'s reader, then concatenated)."""
    frames = [read(str(f)) for f in files]
    if not frames:
        raise InvalidObservations("a PEtab problem needs at least one file of each table")
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=not index)


def load(path: str | os.PathLike[str], *, options: SolverOptions | None = None) -> PetabProblem:
    """Load the PEtab v1 problem described by the YAML file at ``path``."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidObservations(f"{path}: cannot read the PEtab YAML file ({exc})") from None
    if not isinstance(spec, dict) or "parameter_file" not in spec:
        raise InvalidObservations(f"{path}: not a PEtab problem file (no parameter_file)")
    base = path.parent
    where = str(path)
    sbml = _files(spec, "sbml_files", base, where)
    if len(sbml) != 1:
        raise InvalidObservations(f"{where}: exactly one SBML model is needed, found "
                                  f"{len(sbml)}")
    try:
        conditions = _table(get_condition_df, _files(spec, "condition_files", base, where))
        measurements = _table(get_measurement_df, _files(spec, "measurement_files", base,
                                                         where), index=False)
        observables = _table(get_observable_df, _files(spec, "observable_files", base, where))
        parameters = get_parameter_df(str(base / spec["parameter_file"]))
    except (OSError, KeyError, ValueError) as exc:
        raise InvalidObservations(f"{where}: cannot read the PEtab tables ({exc})") from None
    obs = [(str(oid), str(row["observableFormula"]),
            str(row["noiseFormula"]) if not pd.isna(row.get("noiseFormula")) else "1")
           for oid, row in observables.iterrows()]
    model = load_model(sbml[0], obs)
    return PetabProblem(path, model, conditions, measurements, observables, parameters,
                        options or SolverOptions())


__all__ = ["PetabProblem", "load"]
