""":class:`FitResult`: what :func:`physode.fit` returns — estimates, uncertainty, report,
labelled (xarray) results and their netCDF file."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from physode.data.observations import Observations
from physode.model.system import System

if TYPE_CHECKING:
    import xarray as xr


@dataclass(eq=False)
class FitResult:
    """The outcome of a fit.

    Attributes:
        system: the fitted system (the same object that was passed to ``fit``, now holding
            the estimates).
        observations: the data.
        params: ``{name: physical value}`` of every parameter after the fit (fixed ones
            included), numpy arrays of the declared shapes.
        stderr: ``{name: standard error}`` for each free parameter (and ``"y0.<var>"``
            for fitted initial states), NaN where not identifiable.
        labels, values, errors, initial_values: one entry per fitted scalar, in the order of
            ``system.free_labels()``.
        covariance, correlation: ``(P, P)`` in physical space, same order.
        nonidentifiable: labels of parameters the data cannot determine.
        chi2, redchi, aic, bic: fit statistics (see :mod:`physode.estimate.report`).
        stop_reason, success, interrupted: how the optimiser stopped.
        starts: one record per start (multistart), with its initial values and outcome.
        history: chi2 per iteration of the best start.
    """

    system: System
    observations: Observations
    params: dict[str, np.ndarray]
    stderr: dict[str, np.ndarray]
    labels: list[str]
    values: np.ndarray
    errors: np.ndarray
    initial_values: np.ndarray
    bounds: list[tuple[float, float]]
    units: list[str | None]
    covariance: np.ndarray
    correlation: np.ndarray
    nonidentifiable: list[str]
    chi2: float
    redchi: float
    aic: float
    bic: float
    n_data: int
    n_params: int
    n_learnable: int
    sigma_estimated: bool
    noise_sigma: float
    stop_reason: str
    success: bool
    interrupted: bool
    niter: int
    nfev: int
    ngrad: int
    wall_time: float
    optimizer: str
    method: str
    gradient: str
    rtol: float
    atol: float
    compiled: bool
    starts: list[dict[str, Any]]
    history: list[float]
    fitted: list[np.ndarray] = field(repr=False, default_factory=list)
    fine_t: list[np.ndarray] = field(repr=False, default_factory=list)
    fine_states: list[np.ndarray] = field(repr=False, default_factory=list)
    fixed: dict[str, np.ndarray] = field(default_factory=dict)
    truth: dict[str, float] = field(default_factory=dict)

    @property
    def system_name(self) -> str:
        cls = type(self.system)
        return self.system.registry_name or f"{cls.__module__}:{cls.__qualname__}"

    @property
    def value(self) -> dict[str, float]:
        """``{label: value}`` of the fitted scalars."""
        return dict(zip(self.labels, self.values.tolist()))

    def report(self, correlation_threshold: float = 0.1) -> str:
        """lmfit-style table of the estimates and the fit statistics."""
        from physode.estimate.report import report

        return report(self, correlation_threshold)

    def __str__(self) -> str:
        return self.report()

    # ------------------------------------------------------------------ xarray
    def to_xarray(self) -> xr.Dataset:
        """Observed values, fitted trajectories at the observation times and on a fine
        grid, residuals, the estimates with their standard errors, and the settings.

        Variables: ``<var>_observed``, ``<var>_fitted``, ``<var>_residual`` (observed -
        fitted) on ``(experiment, time, *dims)``; ``<var>_sigma`` when the data have it;
        ``<var>_fine`` on ``(experiment, time_fine, *dims)`` for every state variable;
        ``estimate``, ``stderr``, ``initial``, ``lower``, ``upper`` on ``parameter``;
        ``covariance``, ``correlation`` on ``(parameter, parameter2)``; ``chi2_history``
        on ``iteration``.
        """
        import xarray as xr

        from physode.data.labelled import attr_value, observations_to_xarray, system_attrs

        obs_ds = observations_to_xarray(self.observations, system=self.system)
        layout = self.system.layout
        data: dict[str, Any] = {}
        exp_names = self.observations.experiment_names
        for name in self.observations.variables:
            var = layout.by_name[name]
            da = obs_ds[name]
            data[f"{name}_observed"] = da
            fitted = np.full(da.shape, np.nan)
            t_union = da["time"].values
            positions = []
            for d in var.dims:
                full = list(var.coords.get(d, range(var.shape[var.dims.index(d)])))
                positions.append([full.index(c) for c in da[d].values.tolist()])
            for e, exp in enumerate(self.observations.experiments):
                if name not in exp.values:
                    continue
                states = self.fitted[e][:, layout.slices[name]].reshape(-1, *var.shape)
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
            ds = ds.merge(fine)
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
        ds = xr.merge([ds, pds, hds], combine_attrs="override", join="outer")
        attrs = system_attrs(self.system)
        attrs.update(self._settings_attrs())
        ds.attrs = {k: (str(v) if isinstance(v, str) else attr_value(v)) for k, v in attrs.items()}
        return ds

    def _fine_dataset(self, exp_names: list[str]) -> xr.Dataset | None:
        import xarray as xr

        from physode.data.labelled import dim_coords, var_attrs

        if not self.fine_states:
            return None
        layout = self.system.layout
        t_all = np.unique(np.concatenate(self.fine_t))
        data, coords = {}, {"time_fine": ("time_fine", t_all)}
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

        return {
            "title": f"physode fit of {self.system_name}",
            "optimizer": self.optimizer, "solver_method": self.method,
            "gradient": self.gradient, "rtol": float(self.rtol), "atol": float(self.atol),
            "compiled": int(self.compiled), "stop_reason": self.stop_reason,
            "success": int(self.success), "interrupted": int(self.interrupted),
            "chi2": self.chi2, "reduced_chi2": self.redchi, "aic": self.aic,
            "bic": self.bic, "n_data": self.n_data, "n_params": self.n_params,
            "n_learnable": self.n_learnable, "sigma_estimated": int(self.sigma_estimated),
            "noise_sigma": self.noise_sigma, "iterations": self.niter, "nfev": self.nfev,
            "ngrad": self.ngrad, "wall_time_s": self.wall_time,
            "n_starts": len(self.starts),
            "nonidentifiable": ", ".join(self.nonidentifiable),
            "physode_version": __version__, "torch_version": str(torch.__version__),
            "numpy_version": np.__version__, "scipy_version": scipy.__version__,
            "xarray_version": xarray.__version__, "python_version": platform.python_version(),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_xarray` to netCDF-4 (h5netcdf), atomically."""
        from physode.data.labelled import write_netcdf

        write_netcdf(self.to_xarray(), path)

    def plot(self, path: str | os.PathLike[str] | None = None):
        """Observed vs fitted, residuals, loss history (and orbits for N-body); saved to
        ``path`` when given. Returns the matplotlib Figure."""
        from physode.estimate.plots import plot_fit

        return plot_fit(self, path)


__all__ = ["FitResult"]
