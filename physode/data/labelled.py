"""Labelled results: trajectories and observations as :class:`xarray.Dataset` s, and netCDF.

Every dataset has the dimensions ``experiment`` (names), ``time`` and each state
variable's own dimensions (``body``/``axis`` for N bodies, ``species`` for kinetics), with
a coordinate on each (the variable's declared labels, or positions 0..n-1). There is one
data variable per state variable with ``attrs["units"]``; observation noise levels appear
as ``<variable>_sigma``. Dataset attributes carry the system name and the parameter values
(``parameter_<name>``, with ``parameter_<name>_units``), so a file is a complete record.

All attributes are restricted to what netCDF stores exactly (strings, numbers, 1-D numeric
arrays; booleans become 0/1), so that :func:`write_netcdf` followed by :func:`read_netcdf`
gives a dataset identical (``xarray.testing.assert_identical``) to the one written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from physode.data.atomic import atomic_path
from physode.data.observations import Observations
from physode.errors import InvalidArgument
from physode.model.system import System
from physode.ode.solve import Solution

if TYPE_CHECKING:
    import xarray as xr


def to_xarray(obj: Solution | Observations, system: System | None = None, *,
              experiment_names: Sequence[str] | None = None) -> xr.Dataset:
    """Convert a :class:`~physode.Solution` (needs ``system``) or
    :class:`~physode.data.observations.Observations` to a labelled :class:`xarray.Dataset`."""
    if isinstance(obj, Observations):
        return observations_to_xarray(obj, system=system)
    if isinstance(obj, Solution):
        if system is None:
            raise InvalidArgument("to_xarray(solution) needs system= to name the state "
                                  "variables")
        return solution_to_xarray(obj.ts, obj.ys, system, experiment_names=experiment_names)
    raise InvalidArgument(f"to_xarray takes a Solution or Observations, got {type(obj).__name__}")


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _coord(values: Sequence[Any]) -> np.ndarray:
    arr = np.asarray(list(values))
    return arr.astype(object) if arr.dtype.kind in "US" else arr


def attr_value(value: Any) -> Any:
    """A value netCDF stores and returns unchanged."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (np.ndarray, list, tuple)):
        arr = np.asarray(value)
        if arr.ndim == 0:
            return attr_value(arr.item())
        if arr.dtype.kind == "b":
            arr = arr.astype(np.int8)
        if arr.dtype.kind in "US" or arr.dtype == object:
            return ", ".join(str(v) for v in arr.reshape(-1).tolist())
        return arr.reshape(-1) if arr.size != 1 else arr.reshape(-1)[0].item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def system_attrs(system: System | None, name: str | None = None,
                 parameters: Mapping[str, Any] | None = None,
                 parameter_units: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Dataset attributes naming the system and its parameter values (and units)."""
    from physode._version import __version__

    attrs: dict[str, Any] = {"creator": f"physode {__version__}"}
    if name is None and system is not None:
        cls = type(system)
        name = system.registry_name or f"{cls.__module__}:{cls.__qualname__}"
    if name is not None:
        attrs["system"] = name
    if parameters is None and system is not None:
        parameters = {k: v.detach() for k, v in system.params.items()}
    if parameter_units is None and system is not None:
        parameter_units = {k: s.units for k, s in system.parameter_specs().items() if s.units}
    for key, value in (parameters or {}).items():
        attrs[f"parameter_{key}"] = attr_value(value)
        unit = (parameter_units or {}).get(key)
        if unit:
            attrs[f"parameter_{key}_units"] = unit
    return attrs


def dim_coords(var: Any) -> dict[str, np.ndarray]:
    return {dim: _coord(var.coords.get(dim, range(size))) for dim, size in zip(var.dims,
                                                                               var.shape)}


def solution_to_xarray(ts: Any, ys: Any, system: System, *,
                       experiment_names: Sequence[str] | None = None,
                       attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """States ``ys`` of shape ``(n_t, state_size)`` or ``(n_t, n_experiments, state_size)``
    at times ``ts`` as a Dataset with one variable per state variable."""
    import xarray as xr

    t = _numpy(ts).astype(np.float64).reshape(-1)
    y = _numpy(ys)
    layout = system.layout
    if y.ndim == 2:
        y = y[:, None, :]
    if y.ndim != 3 or y.shape[0] != t.size or y.shape[-1] != layout.size:
        raise InvalidArgument(f"ys of shape {tuple(_numpy(ys).shape)}: expected ({t.size}, "
                              f"[n_experiments,] {layout.size}) for times of length {t.size}")
    n_exp = y.shape[1]
    names = [f"exp{i}" for i in range(n_exp)] if experiment_names is None else [
        str(n) for n in experiment_names]
    if len(names) != n_exp:
        raise InvalidArgument(f"{len(names)} experiment names for {n_exp} experiments")
    time_attrs = {"units": system.time_units} if system.time_units else {}
    coords: dict[str, Any] = {"experiment": ("experiment", _coord(names)),
                              "time": ("time", t, time_attrs)}
    data_vars = {}
    for var in layout.variables:
        values = y[..., layout.slices[var.name]].reshape((t.size, n_exp, *var.shape))
        values = np.moveaxis(values, 1, 0)
        coords.update({d: (d, c) for d, c in dim_coords(var).items()})
        data_vars[var.name] = (("experiment", "time", *var.dims), values, var_attrs(var))
    ds_attrs = system_attrs(system)
    ds_attrs.update({k: attr_value(v) for k, v in dict(attrs or {}).items()})
    try:
        return xr.Dataset(data_vars, coords=coords, attrs=ds_attrs)
    except ValueError as exc:  # two variables giving one dimension different sizes
        raise InvalidArgument(f"cannot label the state of {type(system).__name__}: {exc}") from None


def var_attrs(var: Any, units: str | None = None) -> dict[str, Any]:
    attrs = {}
    u = units if units is not None else var.units
    if u:
        attrs["units"] = u
    if var.description:
        attrs["long_name"] = var.description
    return attrs


def observations_to_xarray(obs: Observations, system: System | None = None) -> xr.Dataset:
    """Observations as a Dataset: times are the union over experiments, values NaN where an
    experiment has no observation (other times, masked points); partially observed
    components keep their own labels on the shared dimension; sigma, when recorded, is a
    variable ``<name>_sigma`` of the values' shape."""
    import xarray as xr

    if system is None:
        system = obs.make_system()
    layout = system.layout
    time_attrs = {"units": obs.time_units} if obs.time_units else {}
    arrays: dict[str, list[Any]] = {}  # {data variable: [DataArray per experiment]}
    for exp in obs.experiments:
        for name in exp.values:
            var = system.output_var(name)
            if var is None:
                raise InvalidArgument(f"experiment {exp.name!r}: {name!r} is neither a state "
                                      f"variable nor an observable of {type(system).__name__}")
            coords: dict[str, Any] = {"time": ("time", exp.t.astype(np.float64), time_attrs)}
            for dim, c in dim_coords(var).items():
                pos = exp.index.get(name, {}).get(dim)
                coords[dim] = (dim, c if pos is None else c[pos])
            dims = ("time", *var.dims)
            attrs = var_attrs(var, obs.units.get(name, ""))
            if name not in layout.by_name:
                attrs["output_kind"] = "observable"
            arrays.setdefault(name, []).append(xr.DataArray(
                exp.observed_values(name), dims=dims, coords=coords, attrs=attrs
            ).expand_dims(experiment=_coord([exp.name])))
            s = exp.sigma.get(name)
            if s is not None:
                full = np.broadcast_to(s, exp.values[name].shape).astype(np.float64)
                sattrs = dict(attrs, long_name=f"standard deviation of the noise on {name}")
                arrays.setdefault(f"{name}_sigma", []).append(xr.DataArray(
                    full, dims=dims, coords=coords, attrs=sattrs
                ).expand_dims(experiment=_coord([exp.name])))
    data_vars = {}
    names = obs.experiment_names
    try:
        for key, per_exp in arrays.items():
            data_vars[key] = xr.concat(per_exp, dim="experiment", join="outer",
                                       combine_attrs="override").rename(key)
        ds = xr.merge(list(data_vars.values()), join="outer", combine_attrs="drop")
    except ValueError as exc:
        raise InvalidArgument(f"cannot label the observations: {exc}") from None
    ds = ds.reindex(experiment=_coord(names))
    order: dict[str, np.ndarray] = {}  # the outer join sorts labels; restore the system's order
    for name in obs.variables:
        for dim, full in dim_coords(system.output_var(name)).items():
            present = set(ds[dim].values.tolist())
            order.setdefault(dim, _coord([c for c in full.tolist() if c in present]))
    ds = ds.reindex(order)
    ds = ds.transpose("experiment", "time", ...)
    ds["time"].attrs.update(time_attrs)
    for key, da in data_vars.items():
        ds[key].attrs = dict(da.attrs)
    attrs = system_attrs(system, name=obs.system, parameters=obs.parameters,
                         parameter_units=obs.parameter_units)
    attrs["creator"] = obs.creator
    for key, value in obs.metadata.items():
        attrs.setdefault(key, attr_value(value))
    ds.attrs = attrs
    return protocol_labels(ds, obs)


def protocol_labels(ds: xr.Dataset, obs: Observations) -> xr.Dataset:
    """Label each experiment's protocol (schema 2): coordinates ``condition_<parameter>``
    on ``experiment`` (a number, NaN where not set; a parameter name as text), a 0/1
    coordinate ``preequilibrated``; the doses as ``dose_time``, ``dose_amount`` (NaN when
    a parameter gives it; ``dose_amount_parameter``) and ``dose_target`` on
    ``(experiment, dose)``; each input series as ``input_<name>`` on
    ``(experiment, input_<name>_knot)`` with its times ``input_<name>_time``; and the noise
    model of each observed output as the attribute ``noise_<experiment>``."""
    exps = obs.experiments
    names = sorted({k for e in exps for k in e.conditions})
    for key in names:
        vals = [e.conditions.get(key) for e in exps]
        if any(isinstance(v, str) for v in vals):
            col: np.ndarray = np.asarray(["" if v is None else str(v) for v in vals],
                                         dtype=object)
        else:
            col = np.asarray([np.nan if v is None else float(np.asarray(v).reshape(-1)[0])
                              for v in vals])
        ds = ds.assign_coords({f"condition_{key}": ("experiment", col)})
    if any(e.preequilibration is not None for e in exps):
        ds = ds.assign_coords(preequilibrated=("experiment", np.asarray(
            [int(e.preequilibration is not None) for e in exps], dtype=np.int8)))
    n_dose = max(len(e.dosing) for e in exps)
    if n_dose:
        time = np.full((len(exps), n_dose), np.nan)
        amount = np.full((len(exps), n_dose), np.nan)
        target = np.full((len(exps), n_dose), "", dtype=object)
        param = np.full((len(exps), n_dose), "", dtype=object)
        for i, e in enumerate(exps):
            for j, d in enumerate(e.dosing):
                time[i, j], target[i, j] = d.time, d.target
                if isinstance(d.amount, str):
                    param[i, j] = d.amount
                else:
                    amount[i, j] = d.amount
        dims = ("experiment", "dose")
        ds = ds.assign(dose_time=(dims, time), dose_amount=(dims, amount),
                       dose_amount_parameter=(dims, param), dose_target=(dims, target))
    for key in sorted({k for e in exps for k in e.inputs}):
        n = max(e.inputs[key].times.size for e in exps if key in e.inputs)
        t = np.full((len(exps), n), np.nan)
        v = np.full((len(exps), n), np.nan)
        for i, e in enumerate(exps):
            series = e.inputs.get(key)
            if series is not None:
                t[i, :series.times.size] = series.times
                v[i, :series.times.size] = series.values.reshape(series.times.size, -1)[:, 0]
        kinds = ", ".join(sorted({e.inputs[key].kind for e in exps if key in e.inputs}))
        dims = ("experiment", f"input_{key}_knot")
        ds = ds.assign({f"input_{key}_time": (dims, t),
                        f"input_{key}": (dims, v, {"interpolation": kinds})})
    for name in list(obs.variables):
        if name not in ds:
            continue
        for e in exps:
            spec = e.noise.get(name)
            if spec is not None:
                ds[name].attrs[f"noise_{e.name}"] = (f"{spec.distribution} ({spec.scale}), "
                                                     f"sigma = a + b|y|, a = {spec.a}, "
                                                     f"b = {spec.b}")
    return ds


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Write ``ds`` to netCDF-4 with the h5netcdf engine, atomically (temporary file in
    the same directory, then rename): an interrupted write leaves any old file intact."""
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def read_netcdf(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read a netCDF file fully into memory (the file is closed on return)."""
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


__all__ = [
    "observations_to_xarray",
    "protocol_labels",
    "read_netcdf",
    "solution_to_xarray",
    "system_attrs",
    "to_xarray",
    "write_netcdf",
]
