"""Figures of a fit (matplotlib, Agg backend: works without a display).

One row per observed variable (observed points and fitted curve per component and
experiment | weighted residuals), then the loss history and, for N-body systems, the
fitted orbits projected on the x-y plane with the observed positions. A fit whose model
could not be solved at the estimate is drawn without fitted curves. The figure reads the
fit through :class:`~physode.estimate.parts.FitParts`, never the result class.
"""

from __future__ import annotations

import os
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
        var = layout.by_name[name]
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
            full_fine = traj.fine_states[e][:, layout.slices[name]].reshape(-1, *var.shape)
            full_fit = traj.fitted[e][:, layout.slices[name]].reshape(-1, *var.shape)
            for d, pos in exp.index.get(name, {}).items():
                ax_i = var.dims.index(d)
                full_fine = np.take(full_fine, pos, axis=1 + ax_i)
                full_fit = np.take(full_fit, pos, axis=1 + ax_i)
            fine = full_fine.reshape(full_fine.shape[0], -1)
            fit_at_obs = full_fit.reshape(exp.t.size, -1)
            sigma = exp.sigma.get(name)
            sig = np.ones_like(values) if sigma is None else np.broadcast_to(
                sigma, exp.values[name].shape).reshape(exp.t.size, -1)
            for c in range(values.shape[1]):
                if line >= MAX_LINES:
                    break
                color = colors[line % len(colors)]
                label = f"{exp.name}[{c}]" if values.shape[1] > 1 or len(obs) > 1 else None
                ax_fit.plot(exp.t, values[:, c], ".", ms=2.5, color=color, alpha=0.6)
                ax_fit.plot(traj.fine_t[e], fine[:, c], "-", lw=1.2, color=color, label=label)
                resid = (values[:, c] - fit_at_obs[:, c]) / sig[:, c]
                ax_res.plot(exp.t, resid, ".", ms=2.5, color=color)
                line += 1
        units = obs.units.get(name) or var.units
        ax_fit.set_title(f"{name}: observed (dots) and fitted (lines)" if solved else
                         f"{name}: observed (the model could not be solved at the estimate)")
        ax_fit.set_ylabel(f"{name} [{units}]" if units else name)
        if 1 < line <= 12:
            ax_fit.legend(fontsize=6, ncol=3)
        ax_res.axhline(0.0, color="k", lw=0.6)
        ax_res.set_title(f"{name}: residuals" + (
            "" if res.statistics.sigma_estimated else " / sigma"))
        for ax in (ax_fit, ax_res):
            ax.set_xlabel(f"time [{obs.time_units}]" if obs.time_units else "time")
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
    obs = res.observations
    for e, exp in enumerate(obs.experiments):
        fine = res.trajectories.fine_states[e][:, layout.slices["position"]].reshape(-1, *var.shape)
        for b in range(var.shape[0]):
            color = colors[b % len(colors)]
            ax.plot(fine[:, b, 0], fine[:, b, 1], "-", color=color, lw=1.2,
                    label=f"body {b} fitted" if e == 0 else None)
        if "position" in exp.values and not exp.index.get("position"):
            pos = exp.observed_values("position")
            for b in range(pos.shape[1]):
                ax.plot(pos[::5, b, 0], pos[::5, b, 1], ".", ms=2, alpha=0.5,
                        color=colors[b % len(colors)])
    ax.set_title("orbits projected on the x-y plane (dots: observed)")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=7)


__all__ = ["plot_fit"]
