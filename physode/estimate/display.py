"""Readable ``repr`` and notebook HTML (``_repr_html_``) of a fit, as lmfit's
``ModelResult`` shows itself: the status line, the fit statistics, then the parameter
table (value, standard error, relative error, initial value, truth when known, bounds,
units) and the identifiability findings. Reads the fit through
:class:`~physode.estimate.parts.FitParts`; :func:`physode.estimate.report.report` is the
full text report (``str(res)``)."""

from __future__ import annotations

import math

from physode.estimate.parts import FitParts, system_name
from physode.model.display import bounds_text, fmt, html_block, html_table, text_table


def _header(res: FitParts) -> list[str]:
    header = ["name", "value", "stderr", "rel. %", "initial", "bounds", "units"]
    if res.estimate.truth:
        header.insert(5, "truth")
    return header


def _rows(res: FitParts) -> list[list[str]]:
    est, unc = res.estimate, res.uncertainty
    held = set(unc.at_bound)
    rows = []
    for i, label in enumerate(est.labels):
        value, err = float(est.values[i]), float(unc.stderr[i])
        rel = abs(err / value) * 100 if value != 0 and math.isfinite(err) else math.nan
        row = [label, fmt(value, 7), "at bound" if label in held else fmt(err, 4),
               "n/a" if math.isnan(rel) else f"{rel:.3g}%", fmt(float(est.initial_values[i])),
               bounds_text(*est.bounds[i]), est.units[i] or ""]
        if est.truth:
            row.insert(5, fmt(est.truth[label]) if label in est.truth else "")
        rows.append(row)
    return rows


def _title(res: FitParts) -> str:
    cfg, conv, stats = res.settings, res.convergence, res.statistics
    return (f"FitResult of {system_name(res.system)}: {conv.status_text}; {cfg.optimizer}, "
            f"{conv.niter} iterations, chi-square {fmt(stats.chi2)}, reduced "
            f"{fmt(stats.redchi, 4)}, {stats.n_data} data, {stats.n_params} variables")


def _notes(res: FitParts) -> list[str]:
    notes = []
    if res.settings.optimizer_reason:
        notes.append(f"optimizer: {res.settings.optimizer_reason}")
    if res.convergence.failure:
        notes.append(f"solver failure: {res.convergence.failure}")
    if res.uncertainty.nonidentifiable:
        notes.append("not identifiable (J^T W J singular): "
                     + ", ".join(res.uncertainty.nonidentifiable))
    return notes + res.uncertainty.practical.lines()


def fit_text(res: FitParts) -> str:
    """The plain-text display (``repr``)."""
    return "\n".join([_title(res), text_table(_header(res), _rows(res)),
                      *(f"  {n}" for n in _notes(res))])


def fit_html(res: FitParts) -> str:
    """The notebook display (``_repr_html_``)."""
    stats, conv = res.statistics, res.convergence
    stat_rows = [["status", conv.status_text], ["stop reason", conv.stop_reason],
                 ["optimizer", res.settings.optimizer], ["iterations", str(conv.niter)],
                 ["chi-square", fmt(stats.chi2)], ["reduced chi-square", fmt(stats.redchi)],
                 ["AIC", fmt(stats.aic)], ["BIC", fmt(stats.bic)],
                 ["data points", str(stats.n_data)], ["variables", str(stats.n_params)],
                 ["wall time", f"{conv.wall_time:.2f} s"]]
    return html_block(_title(res), _notes(res), [
        html_table(("statistic", "value"), stat_rows, "fit statistics"),
        html_table(_header(res), _rows(res), "variables")])


__all__ = ["fit_html", "fit_text"]
