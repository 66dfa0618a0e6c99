"""Figure of likelihood profiles: Delta(-2 log L) against each profiled parameter, with
the likelihood-ratio threshold line (Raue et al., Bioinformatics 25:1923, 2009, fig. 1)
and the interval it cuts; an open side is marked as such.

Reads the profiles structurally (any object with ``label``, ``values``, ``delta``,
``estimate``, ``interval``), so it depends on nothing above the plotting helpers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from physode.data.atomic import atomic_path
from physode.estimate.plots import _pyplot


class _Profile(Protocol):
    label: str
    estimate: float
    values: np.ndarray
    delta: np.ndarray

    @property
    def interval(self) -> tuple[float | None, float | None]: ...


def plot_profiles(profiles: Sequence[_Profile], threshold: float, confidence: float,
                  objective: str = "chi2", units: dict[str, str] | None = None,
                  path: str | os.PathLike[str] | None = None) -> Any:
    """One panel per profile; saved atomically to ``path`` when given; returns the Figure."""
    plt = _pyplot()
    n = max(len(profiles), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(profiles):]:
        ax.set_visible(False)
    for ax, p in zip(axes.ravel(), profiles):
        ax.plot(p.values, p.delta, "o-", ms=3, lw=1.2, color="C0", label="profile")
        ax.axhline(threshold, color="C3", ls="--", lw=1,
                   label=f"{100 * confidence:g}% threshold")
        ax.axvline(p.estimate, color="0.5", lw=0.8)
        lo, hi = p.interval
        for limit in (lo, hi):
            if limit is not None:
                ax.axvline(limit, color="C2", lw=1)
        finite = p.delta[np.isfinite(p.delta)]
        top = max(1.5 * threshold, float(np.max(finite)) if finite.size else 0.0)
        ax.set_ylim(-0.05 * top, min(top, 3.0 * threshold))
        unit = (units or {}).get(p.label)
        ax.set_xlabel(p.label + (f" [{unit}]" if unit else ""))
        ax.set_ylabel(f"Delta {objective}")
        if lo is None or hi is None:
            side = "both sides" if lo is None and hi is None else (
                "lower side" if lo is None else "upper side")
            ax.set_title(f"open on the {side}", fontsize=9, color="C3")
    axes.ravel()[0].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=_suffix(path))
    return fig


def _suffix(path: str | os.PathLike[str]) -> str:
    return os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"


__all__ = ["plot_profiles"]
