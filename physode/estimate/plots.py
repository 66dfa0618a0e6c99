"""Figures of a fit (matplotlib, Agg backend: works without a display).

One row per observed variable (observed points and fitted curve per component and
experiment | weighted residuals), then the loss history and, for N-body systems, the
fitted orbits projected on the x-y plane with the observed positions. A fit whose model
could not be solved at the estimate is drawn without fitted curves. The figure reads the
fit through :class:`~physode.estimate.parts.FitParts`, never the result class.

Series are labelled by their coordinates (``"body 1 · x"``, ``"S"``, ``"theta"``), prefixed
by the experiment when there are several (``"exp2: S"``), in a legend. Units that start
with a number are the scale of a nondimensionalised quantity and read
``"position [units of 5.326e12 m]"``.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

import numpy as np

from physode.data.atomic import atomic_path
from physode.estimate.parts import FitParts

MAX_LINES = 12


def _pyplot() -> Any:
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


#: Units that are a scale: a number, then blank space and the unit ("5.326e+12 m"); "1/s"
#: is not one.
_LEADING_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\s+(.*))?$")


def compact_number(x: float) -> str:
    """``5.326e12``, ``1.285e9``, ``0.5``: four significant digits, no exponent padding."""
    text = f"{x:.4g}"
    mant, _, exp = text.partition("e")
    return mant + ("e" + str(int(exp)) if exp else "")


def axis_label(name: str, units: str | None) -> str:
    """``"name [units]"``, or ``"name [units of 5.326e12 m]"`` when the units are a scale
    (a nondimensionalised quantity); ``name`` alone without units."""
    if not units:
        return name
    m = _LEADING_NUMBER.match(units)
    if m is not None:
        unit = f" {m.group(2).strip()}" if m.group(2) else ""
        return f"{name} [units of {compact_number(float(m.group(1)))}{unit}]"
    return f"{name} [{units}]"


def component_labels(var: Any, index: dict[str, Any] | None = None) -> list[str]:
    """One label per observed component of state variable ``var`` (C order): the variable
    name for a scalar, the coordinate label for one dimension (``"S"``), and ``"body 1 ·
    x"`` for several (the last dimension by its label alone)."""
    if not var.dims:
        return [var.name]
    per_dim = []
    for k, (dim, size) in enumerate(zip(var.dims, var.shape)):
        coords = list(var.coords.get(dim, range(size)))
        pos = (index or {}).get(dim)
        chosen = [coords[int(i)] for i in pos] if pos is not None else coords
        last = k == len(var.dims) - 1
        per_dim.append([str(c) if last and dim in var.coords else f"{dim} {c}" for c in chosen])
    return [" · ".join(combo) for combo in itertools.product(*per_dim)]


def plot_fit(res: FitParts, path: str | os.PathLike[str] | None = None) -> Any:
    """Draw the fit; save to ``path`` (atomically) when given; return the Figure."""
    plt = _pyplot()
    traj = res.trajectories
    solved = traj.available
    layout = res.system.layout
    obs = res.observations
    variables = list(obs.variables)
    nbody = "position" in layout.by_name and layout.by_name["position"].dims[-1:] == ("axis",)
    n_rows = len(variables) + 1
    fig, axes = plt.subplots(n_rows, 2, figsize=(12, 3.2 * n_rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, name in enumerate(variables):
        ax_fit, ax_res = axes[row]
        var = res.system.output_var(name)  # a state variable or an observable
        assert var is not None
        line = 0
        for e, exp in enumerate(obs.experiments):
            if name not in exp.values:
                continue
            values = exp.observed_values(name).reshape(exp.t.size, -1)
            if not solved:
                for c in range(min(values.shape[1], MAX_LINES - line)):
                    ax_fit.plot(exp.t, values[:, c], ".", ms=2.5,
                                color=colors[(line + c) % len(colors)], alpha=0.6)
                line += values.shape[1]
                continue
            if name in layout.by_name:
                fine_t = traj.fine_t[e]
                full_fine = traj.fine_states[e][:, layout.slices[name]].reshape(-1, *var.shape)
                full_fit = traj.fitted[e][:, layout.slices[name]].reshape(-1, *var.shape)
            else:  # an observable: drawn through its values at the observation times
                fine_t = exp.t
                full_fit = traj.outputs[e][name].reshape(-1, *var.shape)
                full_fine = full_fit
            for d, pos in exp.index.get(name, {}).items():
                ax_i = var.dims.index(d)
                full_fine = np.take(full_fine, pos, axis=1 + ax_i)
                full_fit = np.take(full_fit, pos, axis=1 + ax_i)
            fine = full_fine.reshape(full_fine.shape[0], -1)
            fit_at_obs = full_fit.reshape(exp.t.size, -1)
            sigma = exp.sigma.get(name)
            sig = np.ones_like(values) if sigma is None else np.broadcast_to(
                sigma, exp.values[name].shape).reshape(exp.t.size, -1)
            names = component_labels(var, exp.index.get(name))
            for c in range(values.shape[1]):
                if line >= MAX_LINES:
                    break
                color = colors[line % len(colors)]
                label = names[c] if c < len(names) else f"{name}[{c}]"
                label = f"{exp.name}: {label}" if len(obs) > 1 else label
                ax_fit.plot(exp.t, values[:, c], ".", ms=2.5, color=color, alpha=0.6)
                ax_fit.plot(fine_t, fine[:, c], "-", lw=1.2, color=color, label=label)
                resid = (values[:, c] - fit_at_obs[:, c]) / sig[:, c]
                ax_res.plot(exp.t, resid, ".", ms=2.5, color=color)
                line += 1
        units = obs.units.get(name) or var.units
        ax_fit.set_title(f"{name}: observed (dots) and fitted (lines)" if solved else
                         f"{name}: observed (the model could not be solved at the estimate)")
        ax_fit.set_ylabel(axis_label(name, units))
        if solved and line >= 1:
            ax_fit.legend(fontsize=6, ncol=3 if line > 4 else 1,
                          title=f"{min(line, MAX_LINES)} series" if line > MAX_LINES else None)
        ax_res.axhline(0.0, color="k", lw=0.6)
        ax_res.set_title(f"{name}: residuals" + (
            "" if res.statistics.sigma_estimated else " / sigma"))
        for ax in (ax_fit, ax_res):
            ax.set_xlabel(axis_label("time", obs.time_units))
    ax_loss, ax_last = axes[-1]
    hist = np.asarray(res.convergence.history, dtype=float)
    if hist.size:
        ax_loss.semilogy(np.arange(1, hist.size + 1), np.where(hist > 0, hist, np.nan), "o-",
                         ms=3)
    ax_loss.set_title(f"chi-square per iteration ({res.settings.optimizer})")
    ax_loss.set_xlabel("iteration")
    est = res.estimate
    if nbody and solved:
        _orbits(ax_last, res, colors)
    else:
        ax_last.axis("off")
        ax_last.text(0.0, 1.0, "\n".join(
            f"{lab} = {v:.6g} ± {err:.2g}" for lab, v, err in
            zip(est.labels[:20], est.values[:20], res.uncertainty.stderr[:20])), va="top",
            family="monospace", fontsize=8, transform=ax_last.transAxes)
    fig.tight_layout()
    if path is not None:
        suffix = os.path.splitext(str(path))[1].lstrip(".") or "png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format=suffix)
        plt.close(fig)
    return fig


def _orbits(ax: Any, res: FitParts, colors: list[str]) -> None:
    layout = res.system.layout
    var = layout.by_name["position"]
    bodies = list(var.coords.get("body", range(var.shape[0])))
    obs = res.observations
    for e, exp in enumerate(obs.experiments):
        fine = res.trajectories.fine_states[e][:, layout.slices["position"]].reshape(-1, *var.shape)
        for b in range(var.shape[0]):
            color = colors[b % len(colors)]
            ax.plot(fine[:, b, 0], fine[:, b, 1], "-", color=color, lw=1.2,
                    label=f"body {bodies[b]} fitted" if e == 0 else None)
        if "position" in exp.values and not exp.index.get("position"):
            pos = exp.observed_values("position")
            for b in range(pos.shape[1]):
                ax.plot(pos[::5, b, 0], pos[::5, b, 1], ".", ms=2, alpha=0.5,
                        color=colors[b % len(colors)])
    ax.set_title("orbits projected on the x-y plane (dots: observed)")
    ax.set_xlabel(axis_label("x", var.units))
    ax.set_ylabel(axis_label("y", var.units))
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=7)


__all__ = ["axis_label", "compact_number", "component_labels", "plot_fit"]
