""":class:`FitResult`: what :func:`physode.fit` returns — the fit's parts, its report,
labelled (xarray) results and their netCDF file.

A result is a few cohesive parts (:mod:`physode.estimate.parts`,
:mod:`physode.estimate.uncertainty`, :mod:`physode.estimate.settings`); the familiar flat
attributes (``res.chi2``, ``res.values``, ``res.stop_reason``...) read through to them.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from physode.data.labelled import (
    attr_value,
    dim_coords,
    observations_to_xarray,
    system_attrs,
    var_attrs,
    write_netcdf,
)
from physode.data.observations import Observations
from physode.estimate.display import fit_html, fit_text
from physode.estimate.parts import Convergence, Estimate, Trajectories, system_name
from physode.estimate.plots import plot_fit
from physode.estimate.posterior_export import posterior_dataset
from physode.estimate.profile_result import ProfileResult
from physode.estimate.report import report
from physode.estimate.settings import FitSettings
from physode.estimate.uncertainty import Statistics, Uncertainty
from physode.model.system import System

if TYPE_CHECKING:
    import xarray as xr

T = TypeVar("T")


class _Read(Generic[T]):
    """A read-only attribute that reads ``<part>.<name>`` (``name`` defaults to its own)."""

    def __init__(self, part: str, name: str | None = None) -> None:
        self.part, self.name = part, name or ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = self.name or name

    def __get__(self, obj: Any, objtype: type | None = None) -> T:
        if obj is None:
            return self  # type: ignore[return-value]
        value: T = getattr(getattr(obj, self.part), self.name)
        return value


@dataclass(eq=False)
class FitResult:
    """The outcome of a fit, in parts:

    - ``estimate`` (:class:`~physode.estimate.parts.Estimate`): ``labels``, ``values``,
      ``initial_values``, ``bounds``, ``units`` (one entry per fitted scalar, in the order of
      ``system.free_labels()``), ``params`` (every parameter by name, fixed ones included),
      ``fixed``, ``truth``.
    - ``uncertainty`` (:class:`~physode.estimate.uncertainty.Uncertainty`): ``covariance``,
      ``correlation`` (``(P, P)``, physical space), per-label standard errors,
      ``nonidentifiable`` labels.
    - ``statistics`` (:class:`~physode.estimate.uncertainty.Statistics`): ``chi2``,
      ``redchi``, ``aic``, ``bic``, ``n_data``, ``n_params``, ``n_learnable``,
      ``sigma_estimated``, ``noise_sigma``.
    - ``convergence`` (:class:`~physode.estimate.parts.Convergence`): ``status``,
      ``stop_reason``, ``success`` (a convergence criterion was met), ``interrupted``,
      ``failure`` (why the model could not be solved, with the solver's hint), counters,
      ``history`` (chi2 per iteration of the best start), ``starts`` (one record per start).
    - ``settings`` (:class:`~physode.estimate.settings.FitSettings`): optimiser, solver,
      tolerances, as used (``compile`` resolved to True or False).
    - ``trajectories`` (:class:`~physode.estimate.parts.Trajectories`): fitted states at the
      observation times and on a fine grid (empty when the final solve failed).

    ``system`` is the fitted system (the object passed to ``fit``, now holding the
    estimate); ``observations`` the data. ``stderr`` is ``{name: standard error}`` for each
    free parameter (and ``"y0.<var>"``), NaN where not identifiable.
    """

    system: System
    observations: Observations
    estimate: Estimate
    uncertainty: Uncertainty
    statistics: Statistics
    convergence: Convergence
    settings: FitSettings
    trajectories: Trajectories
    #: profile likelihoods, once :func:`physode.profile` has run on this result
    profiles: ProfileResult | None = None
    #: posterior draws (an ``arviz.InferenceData``), once :func:`physode.sample` has run
    samples: Any = None

    # ---------------------------------------------------------------- flat attributes
    labels = _Read[list[str]]("estimate")
    values = _Read[np.ndarray]("estimate")
    initial_values = _Read[np.ndarray]("estimate")
    bounds = _Read[list[tuple[float, float]]]("estimate")
    units = _Read[list[str | None]]("estimate")
    params = _Read[dict[str, np.ndarray]]("estimate")
    fixed = _Read[dict[str, np.ndarray]]("estimate")
    truth = _Read[dict[str, float]]("estimate")
    errors = _Read[np.ndarray]("uncertainty", "stderr")
    covariance = _Read[np.ndarray]("uncertainty")
    correlation = _Read[np.ndarray]("uncertainty")
    nonidentifiable = _Read[list[str]]("uncertainty")
    chi2 = _Read[float]("statistics")
    redchi = _Read[float]("statistics")
    aic = _Read[float]("statistics")
    bic = _Read[float]("statistics")
    n_data = _Read[int]("statistics")
    n_params = _Read[int]("statistics")
    n_learnable = _Read[int]("statistics")
    sigma_estimated = _Read[bool]("statistics")
    noise_sigma = _Read[float]("statistics")
    status = _Read[str]("convergence")
    stop_reason = _Read[str]("convergence")
    success = _Read[bool]("convergence")
    interrupted = _Read[bool]("convergence")
    failure = _Read["str | None"]("convergence")
    niter = _Read[int]("convergence")
    nfev = _Read[int]("convergence")
    ngrad = _Read[int]("convergence")
    wall_time = _Read[float]("convergence")
    history = _Read[list[float]]("convergence")
    starts = _Read[list[dict[str, Any]]]("convergence")
    optimizer = _Read[str]("settings")
    method = _Read[str]("settings")
    rtol = _Read[float]("settings")
    atol = _Read[float]("settings")
    gradient = _Read[str]("settings", "gradient_name")
    fitted = _Read[list[np.ndarray]]("trajectories")
    fine_t = _Read[list[np.ndarray]]("trajectories")
    fine_states = _Read[list[np.ndarray]]("trajectories")

    @property
    def compiled(self) -> bool:
        return self.settings.compile is True

    @property
    def stderr(self) -> dict[str, np.ndarray]:
        """``{free name: standard error}`` in the declared shapes."""
        return self.estimate.by_name(self.uncertainty.stderr)

    @property
    def system_name(self) -> str:
        return system_name(self.system)

    @property
    def value(self) -> dict[str, float]:
        """``{label: value}`` of the fitted scalars."""
        return dict(zip(self.labels, self.values.tolist()))

    def report(self, correlation_threshold: float = 0.1) -> str:
        """lmfit-style table of the estimates and the fit statistics (then the profile
        intervals next to the Gauss-Newton ones, when profiled)."""
        text = report(self, correlation_threshold)
        if self.profiles is not None:
            text += "\n" + self.profiles.summary()
        return text

    def __str__(self) -> str:
        return self.report()

    def __repr__(self) -> str:
        return fit_text(self)

    def _repr_html_(self) -> str:
        return fit_html(self)

    # ------------------------------------------------------------------ xarray
    def to_xarray(self) -> xr.Dataset:
        """Observed values, fitted trajectories at the observation times and on a fine
        grid, residuals, the estimates with their standard errors, and the settings.

        Variables: ``<var>_observed``, ``<var>_fitted``, ``<var>_residual`` (observed -
        fitted) on ``(experiment, time, *dims)``; ``<var>_sigma`` when the data have it;
        ``<var>_fine`` on ``(experiment, time_fine, *dims)`` for every state variable;
        ``estimate``, ``stderr``, ``initial``, ``lower``, ``upper`` on ``parameter``;
        ``covariance``, ``correlation`` on ``(parameter, parameter2)``; ``chi2_history``
        on ``iteration``. When the model could not be solved at the estimate the fitted
        values are NaN, there is no fine grid, and ``attrs["failure"]`` says why.
        """
        import xarray as xr

        obs_ds = observations_to_xarray(self.observations, system=self.system)
        layout = self.system.layout
        data: dict[str, Any] = {}
        exp_names = self.observations.experiment_names
        solved = self.trajectories.available
        for name in self.observations.variables:
            var = self.system.output_var(name)
            assert var is not None  # the observations were validated against the system
            da = obs_ds[name]
            data[f"{name}_observed"] = da
            fitted = np.full(da.shape, np.nan)
            t_union = da["time"].values
            positions = []
            for d in var.dims:
                full = list(var.coords.get(d, range(var.shape[var.dims.index(d)])))
                positions.append([full.index(c) for c in da[d].values.tolist()])
            for e, exp in enumerate(self.observations.experiments):
                if name not in exp.values or not solved:
                    continue
                states = (self.fitted[e][:, layout.slices[name]] if name in layout.by_name
                          else self.trajectories.outputs[e][name]).reshape(-1, *var.shape)
                for axis, pos in enumerate(positions):
                    states = np.take(states, pos, axis=1 + axis)
                ti = np.searchsorted(t_union, exp.t)
                fitted[exp_names.index(exp.name), ti] = states
            data[f"{name}_fitted"] = da.copy(data=fitted)
            data[f"{name}_residual"] = da.copy(data=da.values - fitted)
            if f"{name}_sigma" in obs_ds:
                data[f"{name}_sigma"] = obs_ds[f"{name}_sigma"]
        ds = xr.Dataset(data)
        fine = self._fine_dataset(exp_names)
        if fine is not None:
            ds = ds.merge(fine, join="outer")  # partly observed dims: the union
        P = len(self.labels)
        lo = np.array([b[0] for b in self.bounds], dtype=np.float64)
        hi = np.array([b[1] for b in self.bounds], dtype=np.float64)
        pcoords = {"parameter": ("parameter", np.asarray(self.labels, dtype=object)),
                   "parameter_units": ("parameter", np.asarray(
                       [u or "" for u in self.units], dtype=object))}
        pvars = {
            "estimate": (("parameter",), self.values),
            "stderr": (("parameter",), self.errors),
            "initial": (("parameter",), self.initial_values),
            "lower": (("parameter",), lo),
            "upper": (("parameter",), hi),
            "covariance": (("parameter", "parameter2"), self.covariance.reshape(P, P)),
            "correlation": (("parameter", "parameter2"), self.correlation.reshape(P, P)),
        }
        if self.truth:
            pvars["truth"] = (("parameter",), np.array(
                [self.truth.get(lab, np.nan) for lab in self.labels]))
        pds = xr.Dataset(pvars, coords={**pcoords, "parameter2": (
            "parameter2", np.asarray(self.labels, dtype=object))})
        hds = xr.Dataset({"chi2_history": (("iteration",), np.asarray(self.history,
                                                                     dtype=np.float64))})
        extra = [x.to_xarray() for x in (self.profiles,) if x is not None]
        if self.samples is not None:
            extra.append(posterior_dataset(self.samples, self.labels))
        ds = xr.merge([ds, pds, hds, *extra], combine_attrs="override", join="outer")
        attrs = system_attrs(self.system)
        attrs.update(self._settings_attrs())
        for part in extra:
            attrs.update(part.attrs)
        ds.attrs = {k: (str(v) if isinstance(v, str) else attr_value(v)) for k, v in attrs.items()}
        return ds

    def _fine_dataset(self, exp_names: list[str]) -> xr.Dataset | None:
        import xarray as xr

        if not self.fine_states:
            return None
        layout = self.system.layout
        t_all = np.unique(np.concatenate(self.fine_t))
        data: dict[str, Any] = {}
        coords: dict[str, Any] = {"time_fine": ("time_fine", t_all)}
        if self.system.time_units:
            coords["time_fine"] = ("time_fine", t_all, {"units": self.system.time_units})
        for var in layout.variables:
            arr = np.full((len(exp_names), t_all.size, *var.shape), np.nan)
            for e, (t, ys) in enumerate(zip(self.fine_t, self.fine_states)):
                idx = np.searchsorted(t_all, t)
                arr[e, idx] = ys[:, layout.slices[var.name]].reshape(-1, *var.shape)
            for d, c in dim_coords(var).items():
                coords[d] = (d, c)
            data[f"{var.name}_fine"] = (("experiment", "time_fine", *var.dims), arr,
                                        var_attrs(var))
        coords["experiment"] = ("experiment", np.asarray(exp_names, dtype=object))
        return xr.Dataset(data, coords=coords)

    def _settings_attrs(self) -> dict[str, Any]:
        import scipy
        import torch
        import xarray

        from physode._version import __version__

        attrs = {
            "title": f"physode fit of {self.system_name}",
            "optimizer": self.optimizer, "solver_method": self.method,
            "gradient": self.gradient, "rtol": float(self.rtol), "atol": float(self.atol),
            "compiled": int(self.compiled), "status": self.status,
            "stop_reason": self.stop_reason,
            "success": int(self.success), "interrupted": int(self.interrupted),
            "chi2": self.chi2, "reduced_chi2": self.redchi, "aic": self.aic,
            "bic": self.bic, "n_data": self.n_data, "n_params": self.n_params,
            "n_learnable": self.n_learnable, "sigma_estimated": int(self.sigma_estimated),
            "iterations": self.niter, "nfev": self.nfev,
            "ngrad": self.ngrad, "wall_time_s": self.wall_time,
            "n_starts": len(self.starts),
            "nonidentifiable": ", ".join(self.nonidentifiable),
            "physode_version": __version__, "torch_version": str(torch.__version__),
            "numpy_version": np.__version__, "scipy_version": scipy.__version__,
            "xarray_version": xarray.__version__, "python_version": platform.python_version(),
        }
        if self.settings.optimizer_reason:
            attrs["optimizer_reason"] = self.settings.optimizer_reason
        if self.sigma_estimated:  # a sigma from the file is in <var>_sigma, not here
            attrs["noise_sigma"] = self.noise_sigma
        if self.failure:
            attrs["failure"] = self.failure
        return attrs

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_xarray` to netCDF-4 (h5netcdf), atomically."""
        write_netcdf(self.to_xarray(), path)

    def plot(self, path: str | os.PathLike[str] | None = None) -> Any:
        """Observed vs fitted, residuals, loss history (and orbits for N-body); saved to
        ``path`` when given. Returns the matplotlib Figure."""
        return plot_fit(self, path)


__all__ = ["FitResult"]
