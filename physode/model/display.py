"""How a System describes itself: to people (a readable ``repr`` and the HTML that Jupyter
shows, ``_repr_html_``) and to files (:meth:`Described.registry_args`, the plain data that
rebuilds it from the registry).

The text and HTML tables here are shared by the displays of observations and fit results
(:mod:`physode.data.display`, :mod:`physode.estimate.display`), as xarray and lmfit show
their objects in notebooks: a header line, then one table row per parameter with its
value, bounds and units. HTML is escaped (``html.escape``): names and units are user data.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def fmt(value: Any, digits: int = 6) -> str:
    """A number (or a small array) in ``digits`` significant digits; "n/a" for None/NaN."""
    if value is None:
        return "n/a"
    arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    if arr.size == 1:
        x = float(arr.reshape(-1)[0])
        return "n/a" if math.isnan(x) else f"{x:.{digits}g}"
    items = [f"{float(x):.{digits}g}" for x in arr.reshape(-1)[:8]]
    return "[" + ", ".join(items) + (", ...]" if arr.size > 8 else "]")


def bounds_text(lo: float, hi: float) -> str:
    """``"(0, inf)"``; empty when unbounded on both sides."""
    if math.isinf(lo) and math.isinf(hi):
        return ""
    return f"({fmt(lo, 4)}, {fmt(hi, 4)})"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """Columns padded to their widest cell."""
    widths = [max(len(h), *(len(r[j]) for r in rows)) if rows else len(h)
              for j, h in enumerate(header)]
    lines = [indent + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    """An escaped HTML table (left-aligned, monospace numbers)."""
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_block(title: str, lines: Sequence[str], tables: Sequence[str]) -> str:
    """A titled block: bold title, plain lines, then tables."""
    text = "".join(f"<div>{html.escape(line)}</div>" for line in lines)
    return (f"<div class='physode-repr'><b>{html.escape(title)}</b>{text}"
            f"{''.join(tables)}</div>")


PARAMETER_HEADER = ("name", "value", "bounds", "units", "status", "description")


def parameter_rows(system: Any) -> list[list[str]]:
    """One row per parameter of ``system``: name, value, bounds, units, status."""
    rows = []
    values = system.params
    for name, spec in system.parameter_specs().items():
        status = "fixed" if spec.fixed else "free"
        if spec.scale == "log":
            status += ", log scale"
        rows.append([name, fmt(values[name]), bounds_text(spec.lower, spec.upper),
                     spec.units or "", status, spec.description or ""])
    return rows


def state_lines(system: Any) -> list[str]:
    """The state variables with units, the reference initial state and what is unknown."""
    layout = system.layout
    parts = []
    for var in layout.variables:
        shape = f"{var.shape}" if var.shape else ""
        units = f" [{var.units}]" if var.units else ""
        parts.append(f"{var.name}{shape}{units}")
    lines = ["state: " + ", ".join(parts)]
    y0 = system.y0
    if y0 is not None:
        lines.append(f"initial state y0: {fmt(y0)}")
    if system.unknown_initial_state:
        lines.append("unknown initial state (fitted): " + ", ".join(system.unknown_initial_state))
    n_learn = sum(p.numel() for p in system.learnable_parameters())
    if n_learn:
        lines.append(f"learnable terms: {', '.join(system.terms.keys())} ({n_learn} weights)")
    if system.t_span is not None:
        lines.append(f"t_span: ({fmt(system.t_span[0])}, {fmt(system.t_span[1])})"
                     + (f" [{system.time_units}]" if system.time_units else ""))
    return lines


def system_title(system: Any) -> str:
    cls = type(system).__name__
    return cls + (f" (registry name {system.registry_name!r})" if system.registry_name else "")


class Described:
    """Mixin of :class:`~physode.model.system.System`: its ``repr``, its HTML display and
    the arguments that rebuild it from the registry."""

    def registry_args(self) -> dict[str, Any] | None:
        """Plain data (str, numbers, lists and dicts of them) that rebuild this system as
        ``registry.get(self.registry_name, **args)``; files store it (a data file never
        names code). None (the default): the registry name alone rebuilds the system."""
        return None

    def __repr__(self) -> str:
        head = system_title(self)
        body = text_table(PARAMETER_HEADER[:5], [r[:5] for r in parameter_rows(self)])
        return "\n".join([head, "parameters:", body, *state_lines(self)])

    def _repr_html_(self) -> str:
        return html_block(system_title(self), state_lines(self),
                          [html_table(PARAMETER_HEADER, parameter_rows(self), "parameters")])


__all__ = ["PARAMETER_HEADER", "Described", "bounds_text", "fmt", "html_block", "html_table",
           "parameter_rows", "state_lines", "system_title", "text_table"]
