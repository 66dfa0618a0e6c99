"""The outcome of :func:`physode.profile`: one likelihood profile per parameter, the
likelihood-ratio intervals read from them, their labelled (xarray) form and their text.

Plain data (numpy arrays and strings) so that a profile computed in another process
pickles back, and so that :class:`~physode.estimate.result.FitResult` can keep it.

The profile of parameter i is ``Delta(x_i) = min over the others of D(theta) - D(theta_hat)``
with ``D = chi2`` when sigma is known and ``D = N ln chi2`` when one shared noise level was
estimated (sigma profiled out of the Gaussian likelihood). Its ``confidence`` interval is
``{x_i : Delta(x_i) <= chi2_1^-1(confidence)}`` (Raue et al., "Structural and practical
identifiability analysis of partially observed dynamical models by exploiting the profile
likelihood", Bioinformatics 25:1923-1929, 2009, eq. 5-7). A side where the profile never
crosses the threshold before a bound (or before the search gives up) is open: the parameter
is practically non-identifiable there, and the interval has ``None`` on that side.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from physode.errors import InvalidArgument
from physode.estimate.profile_plots import plot_profiles

if TYPE_CHECKING:
    import xarray as xr


@dataclass
class Side:
    """One direction of a profile (``"lower"`` or ``"upper"``) and how it ended."""

    #: the crossing of the threshold (physical value), None when the side is open
    limit: float | None
    #: why the walk stopped: "crossed", "bound", "max_steps", "solver"
    stop: str
    #: one sentence for the report
    reason: str


@dataclass
class ParameterProfile:
    """The profile of one fitted scalar (``label``), its points sorted by value."""

    label: str
    #: the fitted value (physical) and its position in the fitted vector
    estimate: float
    index: int
    #: physical values of the profiled parameter along the profile, increasing
    values: np.ndarray
    #: Delta(-2 log L) at each value (relative to the best optimum found)
    delta: np.ndarray
    #: ``(n_points, P)``: every fitted physical scalar at each profile point
    path: np.ndarray
    lower: Side
    upper: Side
    #: inner optimisations run and model evaluations (residuals + Jacobian) they took
    n_inner: int = 0
    nfev: int = 0
    wall_time: float = 0.0
    #: the lowest objective met on this profile (to detect a better optimum than the fit's)
    best_objective: float = math.inf
    best_point: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def interval(self) -> tuple[float | None, float | None]:
        return self.lower.limit, self.upper.limit

    @property
    def identifiable(self) -> bool:
        return self.lower.limit is not None and self.upper.limit is not None

    def statement(self, confidence: float) -> str:
        """One line on the interval, or on why it is open."""
        lo, hi = self.interval
        pct = f"{100 * confidence:g}%"
        if lo is not None and hi is not None:
            return f"{self.label}: {pct} profile interval [{lo:.6g}, {hi:.6g}]"
        sides = [s for s in (self.lower, self.upper) if s.limit is None]
        why = "; ".join(s.reason for s in sides)
        shown = f"[{'-' if lo is None else f'{lo:.6g}'}, {'-' if hi is None else f'{hi:.6g}'}]"
        return (f"{self.label}: practically non-identifiable — the profile does not cross the "
                f"{pct} threshold on the {' and '.join(_side_names(self))} side ({why}); "
                f"interval {shown} is open")


def _side_names(p: ParameterProfile) -> list[str]:
    return [n for n, s in (("lower", p.lower), ("upper", p.upper)) if s.limit is None]


@dataclass
class ProfileResult:
    """Profiles of several parameters of one fit, with their likelihood-ratio intervals."""

    profiles: dict[str, ParameterProfile]
    confidence: float
    #: Delta(-2 log L) threshold: the chi-square quantile with 1 degree of freedom
    threshold: float
    #: "chi2" (sigma known) or "N log chi2" (one shared sigma estimated and profiled out)
    objective: str
    #: the objective at the optimum the profiles are relative to
    optimum: float
    #: Gauss-Newton standard errors of the profiled labels (for the report), by label
    gn_stderr: dict[str, float] = field(default_factory=dict)
    #: the fitted values of the profiled labels, by label
    gn_values: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    wall_time: float = 0.0
    #: set when a profile found a lower objective than the fit: the fit was not at the optimum
    better_optimum: str | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.profiles)

    def __getitem__(self, label: str) -> ParameterProfile:
        if label not in self.profiles:
            raise InvalidArgument(f"no profile of {label!r}; profiled: {self.labels}")
        return self.profiles[label]

    def interval(self, name: str) -> tuple[float | None, float | None]:
        """``(lower, upper)`` of the ``confidence`` profile interval of ``name`` (a label
        such as ``"k"`` or ``"masses[1]"``); ``None`` on a side where the profile does not
        cross the threshold (practically non-identifiable there: see :meth:`statement`)."""
        return self[name].interval

    def statement(self, name: str) -> str:
        """The interval of ``name`` in words, saying when it is practically
        non-identifiable and why."""
        return self[name].statement(self.confidence)

    def nonidentifiable(self) -> list[str]:
        """Labels whose profile interval is open on at least one side."""
        return [k for k, p in self.profiles.items() if not p.identifiable]

    def summary(self) -> str:
        """The profile intervals next to the Gauss-Newton ones (value -/+ z stderr, z the
        normal quantile of the same confidence), then a line per open profile."""
        z = math.sqrt(self.threshold)
        pct = f"{100 * self.confidence:g}%"
        lines = [f"[[Profile likelihood]] {pct} intervals: Delta {self.objective} <= "
                 f"{self.threshold:.4g} (chi2 quantile, 1 dof; Raue et al. 2009)"]
        header = ["name", "value", f"Gauss-Newton {pct}", f"profile {pct}"]
        rows = []
        for label, p in self.profiles.items():
            value = self.gn_values.get(label, p.estimate)
            se = self.gn_stderr.get(label, math.nan)
            gn = (f"[{value - z * se:.6g}, {value + z * se:.6g}]" if math.isfinite(se)
                  else "n/a (not identifiable)")
            lo, hi = p.interval
            prof = (f"[{'open' if lo is None else f'{lo:.6g}'}, "
                    f"{'open' if hi is None else f'{hi:.6g}'}]")
            rows.append([label, f"{value:.7g}", gn, prof])
        widths = [max(len(h), *(len(r[j]) for r in rows)) if rows else len(h)
                  for j, h in enumerate(header)]
        lines.append("    " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        lines += ["    " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                  for r in rows]
        lines += ["    " + p.statement(self.confidence) for p in self.profiles.values()
                  if not p.identifiable]
        if self.better_optimum:
            lines.append("    warning: " + self.better_optimum)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_xarray(self) -> xr.Dataset:
        """``profile_value``, ``profile_delta`` on ``(profile_parameter, profile_point)``
        (NaN-padded), ``profile_path`` on ``(profile_parameter, profile_point,
        parameter)``, and ``profile_lower``/``profile_upper`` (NaN where open),
        ``profile_estimate``, ``profile_lower_stop``/``profile_upper_stop`` on
        ``profile_parameter``; the threshold and confidence as attributes."""
        import xarray as xr

        labels = self.labels
        n = max((p.values.size for p in self.profiles.values()), default=0)
        P = max((p.path.shape[1] for p in self.profiles.values() if p.path.ndim == 2),
                default=0)
        values = np.full((len(labels), n), np.nan)
        delta = np.full((len(labels), n), np.nan)
        path = np.full((len(labels), n, P), np.nan)
        for j, p in enumerate(self.profiles.values()):
            values[j, :p.values.size] = p.values
            delta[j, :p.delta.size] = p.delta
            if p.path.ndim == 2 and p.path.size:
                path[j, :p.path.shape[0], :p.path.shape[1]] = p.path

        def limit(s: Side) -> float:
            return math.nan if s.limit is None else s.limit

        dims = ("profile_parameter",)
        ds = xr.Dataset(
            {
                "profile_value": (dims + ("profile_point",), values),
                "profile_delta": (dims + ("profile_point",), delta),
                "profile_path": (dims + ("profile_point", "profile_path_parameter"), path),
                "profile_estimate": (dims, np.array([p.estimate for p in
                                                     self.profiles.values()])),
                "profile_lower": (dims, np.array([limit(p.lower) for p in
                                                  self.profiles.values()])),
                "profile_upper": (dims, np.array([limit(p.upper) for p in
                                                  self.profiles.values()])),
                "profile_lower_stop": (dims, np.array([p.lower.reason for p in
                                                       self.profiles.values()], dtype=object)),
                "profile_upper_stop": (dims, np.array([p.upper.reason for p in
                                                       self.profiles.values()], dtype=object)),
            },
            coords={"profile_parameter": np.asarray(labels, dtype=object)},
        )
        ds["profile_delta"].attrs["long_name"] = f"Delta {self.objective} along the profile"
        ds.attrs.update({"profile_confidence": self.confidence,
                         "profile_threshold": self.threshold,
                         "profile_objective": self.objective,
                         "profile_optimum": self.optimum,
                         "profile_wall_time_s": self.wall_time})
        return ds

    def plot(self, path: str | os.PathLike[str] | None = None) -> Any:
        """Each profile with the threshold line and the interval; saved to ``path`` when
        given. Returns the matplotlib Figure."""
        return plot_profiles(list(self.profiles.values()), self.threshold, self.confidence,
                             self.objective, self.units, path)


__all__ = ["ParameterProfile", "ProfileResult", "Side"]
