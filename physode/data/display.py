"""Readable ``repr`` and notebook HTML (``_repr_html_``) of
:class:`~physode.data.observations.Observations`: the system, one row per experiment
(times, observed variables, noise, initial state), the known parameter values with their
units, as xarray shows a Dataset. The arrays themselves are not printed."""

from __future__ import annotations

from typing import Any

from physode.model.display import fmt, html_block, html_table, text_table

EXPERIMENT_HEADER = ("experiment", "times", "t range", "observed", "sigma", "y0")
PARAMETER_HEADER = ("parameter", "value (known)", "units")


def _title(obs: Any) -> str:
    n = len(obs.experiments)
    return (f"Observations of {obs.system!r}: {n} experiment{'s' if n != 1 else ''}, "
            f"observed {', '.join(obs.variables)}")


def _experiment_rows(obs: Any) -> list[list[str]]:
    rows = []
    units = f" {obs.time_units}" if obs.time_units else ""
    for exp in obs.experiments:
        span = f"[{fmt(exp.t[0])}, {fmt(exp.t[-1])}]{units}" if exp.t.size else ""
        sigma = ", ".join(f"{k}={fmt(v, 3)}" for k, v in exp.sigma.items()) or "none"
        y0 = "known" if exp.y0 else "unknown"
        rows.append([exp.name, str(exp.t.size), span, ", ".join(exp.values), sigma, y0])
    return rows


def _parameter_rows(obs: Any) -> list[list[str]]:
    return [[k, fmt(v), obs.parameter_units.get(k, "")] for k, v in obs.parameters.items()]


def observations_text(obs: Any) -> str:
    """The plain-text display (``repr``)."""
    parts = [_title(obs), text_table(EXPERIMENT_HEADER, _experiment_rows(obs))]
    if obs.parameters:
        parts += ["known parameter values (information: the fitted model may differ):",
                  text_table(PARAMETER_HEADER, _parameter_rows(obs))]
    return "\n".join(parts)


def observations_html(obs: Any) -> str:
    """The notebook display (``_repr_html_``)."""
    tables = [html_table(EXPERIMENT_HEADER, _experiment_rows(obs), "experiments")]
    if obs.parameters:
        tables.append(html_table(PARAMETER_HEADER, _parameter_rows(obs),
                                 "known parameter values"))
    return html_block(_title(obs), [], tables)


__all__ = ["observations_html", "observations_text"]
