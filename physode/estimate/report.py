"""The text report of a fit, in the style of lmfit's ``fit_report``.

Information criteria follow lmfit's convention (and Burnham & Anderson, *Model Selection
and Multimodel Inference*, 2nd ed., 2002, sec. 2.2 and 6.4): with N data, P fitted values
and chi2 the weighted sum of squares, ``AIC = N ln(chi2/N) + 2P`` and
``BIC = N ln(chi2/N) + P ln N``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from physode.estimate.result import FitResult


def _g(x: float, digits: int = 7) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def _bounds(lo: float, hi: float) -> str:
    if math.isinf(lo) and math.isinf(hi):
        return "(-inf, inf)"
    return f"({_g(lo, 4)}, {_g(hi, 4)})"


def information_criteria(chi2: float, n_data: int, n_params: int) -> tuple[float, float]:
    """(AIC, BIC) from chi2 as in lmfit (see module docstring)."""
    if n_data <= 0 or not chi2 > 0 or not math.isfinite(chi2):
        tiny = np.finfo(float).tiny
        chi2 = max(chi2, tiny) if math.isfinite(chi2) else chi2
    neg2ll = n_data * math.log(chi2 / n_data) if math.isfinite(chi2) else math.inf
    return neg2ll + 2 * n_params, neg2ll + math.log(n_data) * n_params


def report(res: FitResult, correlation_threshold: float = 0.1) -> str:
    """The lmfit-style report: fit statistics, the parameter table, correlations."""
    lines = ["[[Fit Statistics]]"]
    status = "interrupted (best so far)" if res.interrupted else (
        "success" if res.success else "failed")
    rows = [
        ("system", res.system_name),
        ("optimizer", res.optimizer),
        ("solver", f"{res.method} (rtol={res.rtol:g}, atol={res.atol:g}), gradient "
                   f"{res.gradient}, compiled: {'yes' if res.compiled else 'no'}"),
        ("status", status),
        ("stop reason", res.stop_reason),
        ("iterations", str(res.niter)),
        ("function evals", str(res.nfev)),
        ("gradient evals", str(res.ngrad)),
        ("wall time", f"{res.wall_time:.2f} s"),
        ("data points", str(res.n_data)),
        ("variables", str(res.n_params) + (f" (+{res.n_learnable} learnable weights)"
                                           if res.n_learnable else "")),
        ("chi-square", _g(res.chi2)),
        ("reduced chi-square", _g(res.redchi)),
        ("Akaike info crit", _g(res.aic)),
        ("Bayesian info crit", _g(res.bic)),
    ]
    if res.sigma_estimated:
        rows.append(("noise sigma", f"{_g(res.noise_sigma)} (estimated: the data give no "
                                    "sigma; covariance scaled by reduced chi-square)"))
    if len(res.starts) > 1:
        best = min(range(len(res.starts)), key=lambda i: res.starts[i]["chi2"])
        rows.append(("starts", f"{len(res.starts)} (best: start {best})"))
    width = max(len(k) for k, _ in rows)
    lines += [f"    {k:<{width}} = {v}" for k, v in rows]

    lines.append("[[Variables]]")
    truth = res.truth
    header = ["name", "value", "stderr", "rel. %", "initial", "bounds", "units"]
    if truth:
        header.insert(5, "truth")
    table = []
    for i, label in enumerate(res.labels):
        value, err = res.values[i], res.errors[i]
        rel = abs(err / value) * 100 if value != 0 and math.isfinite(err) else math.nan
        row = [label, _g(value), _g(err, 4), "n/a" if math.isnan(rel) else f"{rel:.3g}%",
               _g(res.initial_values[i]), _bounds(*res.bounds[i]), res.units[i] or ""]
        if truth:
            row.insert(5, _g(truth[label]) if label in truth else "")
        table.append(row)
    widths = [max(len(h), *(len(r[j]) for r in table)) if table else len(h)
              for j, h in enumerate(header)]
    lines.append("    " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in table:
        lines.append("    " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if res.nonidentifiable:
        lines.append("    not identifiable from these data (J^T W J singular along "
                     f"them): {', '.join(res.nonidentifiable)}")
    fixed = {k: v for k, v in res.fixed.items()}
    if fixed:
        text = ", ".join(f"{k}={_g(float(np.asarray(v).reshape(-1)[0]))}" if np.size(v) == 1
                         else f"{k}={np.asarray(v).tolist()}" for k, v in fixed.items())
        lines.append(f"    fixed: {text}")

    pairs = []
    C = res.correlation
    for i in range(len(res.labels)):
        for j in range(i + 1, len(res.labels)):
            c = C[i, j] if C.size else math.nan
            if math.isfinite(c) and abs(c) >= correlation_threshold:
                pairs.append((abs(c), res.labels[i], res.labels[j], c))
    if pairs:
        lines.append(f"[[Correlations]] (unreported correlations are < {correlation_threshold})")
        for _, a, b, c in sorted(pairs, reverse=True)[:20]:
            lines.append(f"    C({a}, {b}) = {c:+.4f}")
    if len(res.starts) > 1:
        lines.append("[[Starts]]")
        for s in res.starts:
            init = ", ".join(f"{k}={_g(v, 4)}" for k, v in list(s["initial"].items())[:6])
            lines.append(f"    start {s['start']}: chi2 = {_g(s['chi2'])}, {s['niter']} iter, "
                         f"{s['stop_reason']}; from {init}")
    return "\n".join(lines)


__all__ = ["information_criteria", "report"]
