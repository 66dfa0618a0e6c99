"""``physode.simulate_ensemble``: one system simulated at many parameter sets, as one
labelled :class:`xarray.Dataset` with a ``sample`` dimension.

Ensembles (parameter sweeps, posterior predictive draws, uncertainty propagation) are
independent solves, so they run on any :class:`concurrent.futures.Executor`
(:func:`physode.estimate.executor.map_tasks`): the samples are cut into chunks, each chunk
a task that solves its samples one after another on the worker's own copy of the system
(sent once per worker process). It lives in the estimation layer because it uses the
executor machinery; the dataset it returns follows :mod:`physode.data.labelled`. A sample
whose solve fails gets NaN states and its message in ``failure``; the others are
unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from physode.data.labelled import attr_value, dim_coords, system_attrs, var_attrs
from physode.errors import InvalidArgument, PhysodeError
from physode.estimate.executor import Shared, map_tasks
from physode.model.system import System
from physode.ode.solve import solve
from physode.ode.times import check_times

if TYPE_CHECKING:
    import xarray as xr


def _parameter_table(system: System, parameter_sets: Any) -> dict[str, np.ndarray]:
    """``{name: (n_samples, *shape)}`` from a mapping of arrays or a sequence of dicts."""
    specs = system.parameter_specs()
    if isinstance(parameter_sets, Mapping):
        table = {str(k): np.asarray(v, dtype=np.float64) for k, v in parameter_sets.items()}
    elif isinstance(parameter_sets, Sequence) and not isinstance(parameter_sets, str):
        rows = list(parameter_sets)
        if not rows or not all(isinstance(r, Mapping) for r in rows):
            raise InvalidArgument("parameter_sets: give {name: values with a leading sample "
                                  "axis} or a non-empty list of {name: value} dicts")
        names = sorted({k for r in rows for k in r})
        missing = [(i, n) for i, r in enumerate(rows) for n in names if n not in r]
        if missing:
            i, n = missing[0]
            raise InvalidArgument(f"parameter_sets[{i}] has no value for {n!r}; every set "
                                  "must name the same parameters")
        table = {n: np.stack([np.asarray(r[n], dtype=np.float64) for r in rows])
                 for n in names}
    else:
        raise InvalidArgument(f"parameter_sets must be a mapping or a list of dicts, got "
                              f"{type(parameter_sets).__name__}")
    sizes = {v.shape[0] if v.ndim else -1 for v in table.values()}
    if not table or len(sizes) != 1 or -1 in sizes or 0 in sizes:
        got = {k: (v.shape[0] if v.ndim else None) for k, v in table.items()}
        raise InvalidArgument("parameter_sets: every parameter needs the same number (>= 1) "
                              f"of samples along its first axis; got sizes {got}")
    for name, v in table.items():
        if name not in specs:
            raise InvalidArgument(f"parameter_sets: {type(system).__name__} has no parameter "
                                  f"{name!r}; its parameters are {sorted(specs)}")
        if v.shape[1:] != tuple(specs[name].shape) and v.shape[1:] != ():
            raise InvalidArgument(f"parameter_sets[{name!r}] has per-sample shape "
                                  f"{v.shape[1:]}, the parameter {tuple(specs[name].shape)}")
    return table


def _chunk_task(task: tuple[Shared[tuple[System, np.ndarray, dict[str, Any]]],
                            dict[str, np.ndarray], np.ndarray]
                ) -> tuple[np.ndarray, list[str]]:
    """Solve the samples of one chunk: ``(states (k, n_t, size), failure messages)``."""
    shared, values, y0 = task
    (system, t, solver), _ = shared.local()
    ts = torch.as_tensor(t, dtype=torch.float64)
    n = y0.shape[0]
    out = np.full((n, t.size, system.state_size), np.nan)
    failures = [""] * n
    for k in range(n):
        try:
            system.set_params(**{name: v[k] for name, v in values.items()})
            with torch.no_grad():
                sol = solve(system, torch.as_tensor(y0[k], dtype=torch.float64), ts, **solver)
            out[k] = sol.ys.cpu().numpy()
        except PhysodeError as exc:  # a failed solve, a value outside the bounds
            failures[k] = str(exc)
    return out, failures


def simulate_ensemble(system: System, parameter_sets: Any, t: Any,
                      executor: Executor | str | None = None, *, y0: Any = None,
                      method: str = "dopri5", rtol: float = 1e-8, atol: float = 1e-10,
                      options: dict[str, Any] | None = None, chunk_size: int | None = None,
                      progress: bool = False) -> xr.Dataset:
    """Simulate ``system`` once per parameter set, on ``executor``.

    Args:
        system: the :class:`~physode.System` (not changed: workers use copies).
        parameter_sets: ``{name: values}`` with a leading sample axis (parameters not
            named keep their value), or a list of ``{name: value}`` dicts.
        t: output times (1-D, increasing); ``t[0]`` is the time of ``y0``.
        executor: None (here), ``"processes"`` or any ``concurrent.futures.Executor``.
        y0: initial state, flat ``(state_size,)`` or one per sample
            ``(n_samples, state_size)``; default the system's reference ``y0``.
        method, rtol, atol, options: the solver (see :func:`physode.solve`).
        chunk_size: samples per task (default: about four tasks per core, at least 1).
        progress: a progress bar over the chunks.

    Returns:
        A Dataset with one variable per state variable on ``(sample, time, *dims)``
        (units in attrs), ``parameter_<name>`` on ``(sample, ...)`` for each varied
        parameter, and ``failure`` (empty string, or why that sample's solve failed).
    """
    import os

    import xarray as xr

    if not isinstance(system, System):
        raise InvalidArgument(f"simulate_ensemble needs a physode.System, got "
                              f"{type(system).__name__}")
    table = _parameter_table(system, parameter_sets)
    n = next(iter(table.values())).shape[0]
    times = check_times(t, decreasing=False)
    size = system.state_size
    if y0 is None:
        if system.y0 is None:
            raise InvalidArgument(f"{type(system).__name__} has no reference initial state; "
                                  "pass y0")
        y0 = system.y0.detach().cpu().numpy()
    y0_arr = np.asarray(y0.detach().cpu() if isinstance(y0, torch.Tensor) else y0,
                        dtype=np.float64)
    if y0_arr.shape == (size,):
        y0_arr = np.broadcast_to(y0_arr, (n, size))
    if y0_arr.shape != (n, size):
        raise InvalidArgument(f"y0 of shape {y0_arr.shape}: expected ({size},) or "
                              f"({n}, {size}) for {n} samples")
    if chunk_size is None:
        chunk_size = max(1, math.ceil(n / (4 * (os.cpu_count() or 1))))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidArgument(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    solver = {"method": method, "rtol": rtol, "atol": atol, "options": options}
    shared = Shared((_copy(system), times, solver))  # copied again per worker process
    starts = range(0, n, chunk_size)
    tasks = [(shared, {k: v[s:s + chunk_size] for k, v in table.items()},
              np.ascontiguousarray(y0_arr[s:s + chunk_size])) for s in starts]
    out = map_tasks(_chunk_task, tasks, executor, progress=progress, desc="ensemble")
    if out.interrupted:
        raise KeyboardInterrupt
    states = np.concatenate([r[0] for r in out.finished]) if out.finished else np.zeros(
        (0, times.size, size))
    failures = [f for r in out.finished for f in r[1]]
    return _dataset(xr, system, table, times, states, failures)


def _copy(system: System) -> System:
    """A private copy, so setting parameters never touches the caller's system."""
    import copy

    return copy.deepcopy(system)


def _dataset(xr: Any, system: System, table: dict[str, np.ndarray], times: np.ndarray,
             states: np.ndarray, failures: list[str]) -> xr.Dataset:
    layout = system.layout
    n = states.shape[0]
    time_attrs = {"units": system.time_units} if system.time_units else {}
    coords: dict[str, Any] = {"sample": ("sample", np.arange(n)),
                              "time": ("time", times, time_attrs)}
    data: dict[str, Any] = {}
    for var in layout.variables:
        values = states[..., layout.slices[var.name]].reshape(n, times.size, *var.shape)
        coords.update({d: (d, c) for d, c in dim_coords(var).items()})
        data[var.name] = (("sample", "time", *var.dims), values, var_attrs(var))
    specs = system.parameter_specs()
    for name, v in table.items():
        dims = ("sample", *[f"{name}_dim{i}" for i in range(v.ndim - 1)])
        attrs = {"units": specs[name].units} if specs[name].units else {}
        data[f"parameter_{name}"] = (dims, v, attrs)
    data["failure"] = (("sample",), np.asarray(failures, dtype=object))
    attrs = system_attrs(system)
    attrs["n_failed"] = attr_value(sum(1 for f in failures if f))
    return xr.Dataset(data, coords=coords, attrs=attrs)


__all__ = ["simulate_ensemble"]
