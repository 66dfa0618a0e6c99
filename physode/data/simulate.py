"""Synthetic observations: integrate a system accurately, observe part of it, add noise.

``simulate`` is how the shipped datasets are made and how a fit is tested against a known
truth: the returned :class:`~physode.data.observations.Observations` record the initial states,
the true parameter values, the noise level (sigma) and how the data were generated, and
save to HDF5 with :func:`physode.save_observations`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from physode.data.observations import Experiment, Observations
from physode.data.schema import SYSTEM_ARGS_ATTR, system_label
from physode.errors import InvalidArgument, SolverError
from physode.model import registry
from physode.model.system import System
from physode.ode.methods import get_method
from physode.ode.solve import solve
from physode.ode.times import check_times

#: Tried first when no ``method`` is given; stiff problems make it fail fast (see below).
AUTO_METHOD = "dopri5"
#: The fallback for stiff problems (Rosenbrock, Hairer & Wanner, Solving ODEs II, IV.7).
STIFF_METHOD = "rodas4"
#: Step budget of the explicit attempt before switching to the stiff method.
AUTO_MAX_STEPS = 10_000

Selection = Any  # None | int | label | sequence of those | {dim: positions or labels}


def simulate(
    system: System | str,
    t: Any,
    y0: Any = None,
    noise: float | Mapping[str, float] = 0.0,
    seed: int = 0,
    observe: str | Sequence[str] | Mapping[str, Selection] | None = None,
    relative_noise: bool = False,
    *,
    t0: float | None = None,
    method: str | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    options: dict | None = None,
    experiment_names: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Observations:
    """Simulate ``system`` at times ``t`` and return (noisy) observations of it.

    Args:
        system: a :class:`~physode.System` or a registry name (``"robertson"``).
        t: observation times, 1-D strictly increasing (shared by all experiments).
        y0: initial state(s): flat ``(state_size,)`` for one experiment or
            ``(n_experiments, state_size)`` for several, or ``{variable: value}`` with an
            optional leading experiment dimension; default the system's reference ``y0``.
        noise: standard deviation of the Gaussian noise added to every observed value
            (a number, or ``{variable: number}``); 0 gives exact data.
        seed: seed of the noise generator (numpy PCG64); same seed, same data.
        observe: which state to observe: None (everything), variable names, or
            ``{variable: selection}`` where the selection is None (all components), an
            index or coordinate label or a list of them (along the variable's first
            dimension), or ``{dim: positions or labels}``.
        relative_noise: the noise standard deviation is ``noise * |y|`` point by point
            (floored at the smallest normal float so sigma stays positive), instead of
            ``noise`` itself.
        t0: time of ``y0``; default ``t[0]``. Must not be after ``t[0]``; the initial
            state is not itself an observation unless ``t0 == t[0]``.
        method: solver; default: dopri5, switching to rodas4 if dopri5 runs out of its
            step budget or step size (the usual sign of stiffness, e.g. Robertson). A
            fixed-step method (euler, midpoint, rk4) is checked by step doubling and
            refused (:class:`~physode.errors.InvalidArgument`) when its step is too large
            for ``rtol``/``atol``; the file then records its ``step_size`` and
            ``error_ratio`` (estimated error over tolerance, at most 1).
        rtol, atol: solver tolerances, tight by default: the data should be exact to
            well below any noise level.
        options: solver options (see :func:`physode.solve`).
        experiment_names: one name per experiment (default ``exp0, exp1, ...``).
        metadata: extra file attributes.

    Returns:
        :class:`Observations` with sigma recorded when ``noise > 0``, the initial states,
        the true parameter values and the generation settings in ``metadata``.
    """
    if isinstance(system, str):
        system = registry.get(system)
    if not isinstance(system, System):
        raise InvalidArgument(f"simulate needs a physode.System or a system name, got "
                              f"{type(system).__name__}")
    times = check_times(t, decreasing=False)
    start = float(times[0]) if t0 is None else float(t0)
    if not math.isfinite(start) or start > times[0]:
        raise InvalidArgument(f"t0={t0!r} must be finite and not after the first observation "
                              f"time {times[0]!r}")
    y0_flat = _initial_states(system, y0)
    n_exp = y0_flat.shape[0]
    names = [f"exp{i}" for i in range(n_exp)] if experiment_names is None else [
        str(n) for n in experiment_names]
    if len(names) != n_exp:
        raise InvalidArgument(f"{len(names)} experiment names for {n_exp} experiments")
    selections = _selections(system, observe)
    noise_by_var = _noise(noise, selections)

    grid = times if start == times[0] else np.concatenate([[start], times])
    used_method, ys, solver_info = _integrate(system, y0_flat, grid, method, rtol, atol, options)
    if start != times[0]:
        ys = ys[1:]
    states = system.layout.unpack(torch.as_tensor(ys))  # {name: (n_t, n_exp, *shape)}

    rng = np.random.default_rng(seed)
    experiments = []
    for e in range(n_exp):
        values, index, sigma = {}, {}, {}
        for name, sel in selections.items():
            clean = states[name][:, e].numpy()
            for axis, pos in sel.items():
                clean = np.take(clean, pos, axis=1 + axis)
            level = noise_by_var[name]
            if level > 0:
                if relative_noise:
                    s = level * np.maximum(np.abs(clean), np.finfo(np.float64).tiny)
                else:
                    s = np.asarray(level, dtype=np.float64)
                values[name] = clean + s * rng.standard_normal(clean.shape)
                sigma[name] = s
            else:
                values[name] = clean.copy()
            var = system.layout.by_name[name]
            if sel:
                index[name] = {var.dims[axis]: np.asarray(pos, dtype=np.int64)
                               for axis, pos in sel.items()}
        init = system.layout.unpack(torch.as_tensor(y0_flat[e]))
        experiments.append(Experiment(
            t=times.copy(), values=values, index=index, sigma=sigma,
            y0={k: v.numpy().copy() for k, v in init.items()}, t0=start, name=names[e]))

    specs = system.parameter_specs()
    params = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in system.params.items()}
    info: dict[str, Any] = {
        "generator": "physode.simulate", "method": used_method, "rtol": float(rtol),
        "atol": float(atol), "seed": int(seed), "relative_noise": bool(relative_noise),
        **solver_info,
    }
    for name, level in noise_by_var.items():
        info[f"noise_{name}"] = float(level)
    args = system.registry_args()  # a system defined by data: the file rebuilds it
    if args is not None:
        info[SYSTEM_ARGS_ATTR] = json.dumps(args)
    info.update(dict(metadata or {}))
    layout = system.layout
    return Observations(
        system=system_label(system),
        experiments=experiments,
        units={n: str(layout.by_name[n].units) for n in selections if layout.by_name[n].units},
        time_units=getattr(system, "time_units", None),
        parameters=params,
        parameter_units={k: str(s.units) for k, s in specs.items() if s.units},
        metadata=info,
    )


def _initial_states(system: System, y0: Any) -> np.ndarray:
    """``(n_experiments, state_size)`` float64 from the many accepted forms of ``y0``."""
    layout = system.layout
    if y0 is None:
        ref = system.y0
        if ref is None:
            raise InvalidArgument(f"{type(system).__name__} has no reference initial state; "
                                  "pass y0")
        flat = ref.detach().cpu().to(torch.float64)
    elif isinstance(y0, Mapping):
        vals = {k: torch.as_tensor(np.asarray(v.detach().cpu() if hasattr(v, "detach") else v,
                                              dtype=np.float64)) for k, v in y0.items()}
        flat = layout.pack(vals, what="y0")
    else:
        src = y0.detach().cpu() if isinstance(y0, torch.Tensor) else y0
        flat = torch.as_tensor(np.asarray(src, dtype=np.float64))
    if flat.dim() == 1:
        flat = flat.unsqueeze(0)
    if flat.dim() != 2 or flat.shape[-1] != layout.size:
        raise InvalidArgument(f"y0 of shape {tuple(flat.shape)}: expected ({layout.size},) or "
                              f"(n_experiments, {layout.size}) for {list(layout.names)}")
    if not bool(torch.isfinite(flat).all()):
        raise InvalidArgument("y0 contains NaN or inf")
    return flat.numpy().copy()


def _positions(var: Any, axis: int, sel: Any) -> list[int]:
    """Positions along ``var.dims[axis]`` from indices and/or coordinate labels."""
    dim = var.dims[axis]
    size = var.shape[axis]
    labels = list(var.coords.get(dim, ()))
    items = list(sel) if isinstance(sel, (list, tuple, np.ndarray, range)) else [sel]
    out = []
    for item in items:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool) and (
                not labels or item not in labels or labels.index(item) == item):
            pos = int(item)
        elif item in labels:
            pos = labels.index(item)
        else:
            raise InvalidArgument(f"observe: {item!r} is neither a position in [0, {size}) nor "
                                  f"a label of dimension {dim!r} of {var.name!r} "
                                  f"(labels: {labels or 'none'})")
        if not 0 <= pos < size:
            raise InvalidArgument(f"observe: position {pos} out of range for dimension {dim!r} "
                                  f"of size {size} of {var.name!r}")
        out.append(pos)
    if not out or len(set(out)) != len(out):
        raise InvalidArgument(f"observe: selection {sel!r} of {var.name!r} is empty or repeats")
    return sorted(out)


def _selections(system: System, observe: Any) -> dict[str, dict[int, list[int]]]:
    """``{variable: {axis: positions}}`` (empty inner dict = the whole variable)."""
    layout = system.layout
    if observe is None:
        return {n: {} for n in layout.names}
    if isinstance(observe, str):
        observe = [observe]
    if not isinstance(observe, Mapping):
        observe = {name: None for name in observe}
    out: dict[str, dict[int, list[int]]] = {}
    for name, sel in observe.items():
        var = layout.by_name.get(name)
        if var is None:
            raise InvalidArgument(f"observe: {type(system).__name__} has no state variable "
                                  f"{name!r}; its variables are {list(layout.names)}")
        if sel is None or sel is True:
            out[name] = {}
            continue
        if not var.dims:
            raise InvalidArgument(f"observe: {name!r} is a scalar; it has no components to select")
        per_dim = sel if isinstance(sel, Mapping) else {var.dims[0]: sel}
        chosen: dict[int, list[int]] = {}
        for dim, positions in per_dim.items():
            if dim not in var.dims:
                raise InvalidArgument(f"observe: {name!r} has no dimension {dim!r} "
                                      f"(dims {list(var.dims)})")
            axis = var.dims.index(dim)
            chosen[axis] = _positions(var, axis, positions)
        out[name] = {a: p for a, p in sorted(chosen.items())
                     if p != list(range(var.shape[a]))}
    if not out:
        raise InvalidArgument("observe selects no state variable")
    return {n: out[n] for n in layout.names if n in out}


def _noise(noise: Any, selections: Mapping[str, Any]) -> dict[str, float]:
    if isinstance(noise, Mapping):
        unknown = [k for k in noise if k not in selections]
        if unknown:
            raise InvalidArgument(f"noise given for unobserved variable(s) {unknown}")
        levels = {n: float(noise.get(n, 0.0)) for n in selections}
    else:
        levels = {n: float(noise) for n in selections}
    for n, v in levels.items():
        if not math.isfinite(v) or v < 0:
            raise InvalidArgument(f"noise for {n!r} must be finite and >= 0, got {v!r}")
    return levels


def _integrate(system: System, y0: np.ndarray, grid: np.ndarray, method: str | None,
               rtol: float, atol: float, options: dict | None
               ) -> tuple[str, np.ndarray, dict[str, Any]]:
    """Solve without gradients; returns the method used, ``(n_t, n_exp, size)`` and what
    the file should record about the solve (a fixed-step method's step and error)."""
    device = next((x.device for x in (*system.parameters(), *system.buffers())),
                  torch.device("cpu"))
    y = torch.as_tensor(y0, dtype=torch.float64, device=device)
    ts = torch.as_tensor(grid, dtype=torch.float64, device=device)
    with torch.no_grad():
        if method is not None:
            scheme = get_method(method)
            sol = solve(system, y, ts, method=method, rtol=rtol, atol=atol, options=options)
            info: dict[str, Any] = {}
            if not scheme.adaptive:
                info = _check_fixed_step(system, y, ts, method, scheme.order, rtol, atol,
                                         options, sol.ys)
            return method, sol.ys.cpu().numpy(), info
        trial = dict(options or {})
        trial.setdefault("max_steps", AUTO_MAX_STEPS)
        try:
            sol = solve(system, y, ts, method=AUTO_METHOD, rtol=rtol, atol=atol, options=trial)
            return AUTO_METHOD, sol.ys.cpu().numpy(), {}
        except SolverError:
            sol = solve(system, y, ts, method=STIFF_METHOD, rtol=rtol, atol=atol,
                        options=options)
            return STIFF_METHOD, sol.ys.cpu().numpy(), {}


def _check_fixed_step(system: System, y: torch.Tensor, ts: torch.Tensor, method: str,
                      order: int, rtol: float, atol: float, options: dict | None,
                      coarse: torch.Tensor) -> dict[str, Any]:
    """Refuse a fixed-step solve whose error exceeds the requested tolerances.

    The error of the solution with step h is estimated by step doubling (Richardson,
    Hairer, Norsett & Wanner, Solving ODEs I, II.4): solved again with h/2, the error of
    the h solution is ``|y_h - y_{h/2}| * 2^p / (2^p - 1)`` for a method of order p. Its
    largest ratio to ``atol + rtol |y|`` must be at most 1. Without
    ``options['step_size']`` the steps are the intervals between output times, and h is
    the largest of them. Returns ``{"step_size": h, "error_ratio": ratio}`` for the file."""
    opts = dict(options or {})
    grid = ts.cpu().numpy()
    if grid.size < 2:
        return {"step_size": 0.0, "error_ratio": 0.0}
    given = opts.get("step_size")
    h = float(given) if given is not None else float(np.max(np.abs(np.diff(grid))))
    half = dict(opts, step_size=h / 2)
    if given is None:
        half["step_to_outputs"] = True
    fine = solve(system, y, ts, method=method, rtol=rtol, atol=atol, options=half).ys
    factor = 2.0**order / (2.0**order - 1.0)
    ratio = float(((coarse - fine).abs() * factor / (atol + rtol * fine.abs())).max())
    if not ratio <= 1.0:
        hint = ""
        if math.isfinite(ratio) and ratio > 0:
            hint = f"options={{'step_size': {0.9 * h * ratio ** (-1.0 / order):.2g}}} or less, or "
        how = f"step_size={given!r}" if given is not None else (
            f"no step_size (steps are the output intervals, up to {h:.3g})")
        raise InvalidArgument(
            f"method {method!r} is fixed-step and with {how} its error is about "
            f"{ratio:.3g} times the requested tolerance (rtol={rtol:g}, atol={atol:g}), "
            f"estimated by step doubling; give {hint}leave method unset for an adaptive "
            "solve, or loosen rtol/atol")
    return {"step_size": h, "error_ratio": ratio}


__all__ = ["simulate"]
