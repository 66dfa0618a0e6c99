"""The text report of a fit, in the style of lmfit's ``fit_report``.

It reads a fit through :class:`~physode.estimate.parts.FitParts` (plain data), never the
result class. The statistics (chi-square, AIC, BIC) come from
:mod:`physode.estimate.uncertainty`.
"""

from __future__ import annotations

import math

import numpy as np

from physode.estimate.parts import FitParts, system_name


def _g(x: float | None, digits: int = 7) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def _bounds(lo: float, hi: float) -> str:
    if math.isinf(lo) and math.isinf(hi):
        return "(-inf, inf)"
    return f"({_g(lo, 4)}, {_g(hi, 4)})"


def report(res: FitParts, correlation_threshold: float = 0.1) -> str:
    """The lmfit-style report: fit statistics, the parameter table, correlations."""
    lines = ["[[Fit Statistics]]"]
    conv, stats, cfg, est = res.convergence, res.statistics, res.settings, res.estimate
    rows = [
        ("system", system_name(res.system)),
        ("optimizer", cfg.optimizer + (f" ({cfg.optimizer_reason})"
                                       if cfg.optimizer_reason else "")),
        ("solver", f"{cfg.method} (rtol={cfg.rtol:g}, atol={cfg.atol:g}), gradient "
                   f"{cfg.gradient_name}, compiled: {'yes' if cfg.compile is True else 'no'}"),
        ("status", conv.status_text),
        ("stop reason", conv.stop_reason),
    ]
    if conv.failure:
        rows.append(("solver failure", conv.failure))
    rows += [
        ("iterations", str(conv.niter)),
        ("function evals", str(conv.nfev)),
        ("gradient evals", str(conv.ngrad)),
        ("wall time", f"{conv.wall_time:.2f} s"),
        ("data points", str(stats.n_data)),
        ("variables", str(stats.n_params) + (f" (+{stats.n_learnable} learnable weights)"
                                             if stats.n_learnable else "")),
        ("chi-square", _g(stats.chi2)),
        ("reduced chi-square", _g(stats.redchi)),
        ("Akaike info crit", _g(stats.aic)),
        ("Bayesian info crit", _g(stats.bic)),
    ]
    if stats.sigma_estimated:
        rows.append(("noise sigma", f"{_g(stats.noise_sigma)} (estimated: the data give no "
                                    "sigma; covariance scaled by reduced chi-square)"))
    objective = getattr(est, "objective", {})
    if objective.get("kind") and objective["kind"] != "weighted least squares":
        note = " (maximum a posteriori: likelihood x priors)" if objective.get("priors") else ""
        rows.append(("objective", f"{objective['kind']} = {_g(objective['value'])}{note}"))
    starts = conv.starts
    if len(starts) > 1:
        chi2 = [float(s["chi2"]) for s in starts]
        best = min(range(len(starts)), key=lambda i: chi2[i])
        near = sum(c - chi2[best] <= 1e-3 * max(1.0, abs(chi2[best])) for c in chi2)
        rows.append(("starts", f"{len(starts)} (best: start {best}; {near} within 0.1 % "
                               "of the best)"))
    width = max(len(k) for k, _ in rows)
    lines += [f"    {k:<{width}} = {v}" for k, v in rows]

    lines.append("[[Variables]]")
    truth = est.truth
    unc = res.uncertainty
    header = ["name", "value", "stderr", "rel. %", "initial", "bounds", "units"]
    if truth:
        header.insert(5, "truth")
    table = []
    held = set(unc.at_bound)
    for i, label in enumerate(est.labels):
        value, err = float(est.values[i]), float(unc.stderr[i])
        rel = abs(err / value) * 100 if value != 0 and math.isfinite(err) else math.nan
        row = [label, _g(value), "at bound" if label in held else _g(err, 4),
               "n/a" if math.isnan(rel) else f"{rel:.3g}%",
               _g(float(est.initial_values[i])), _bounds(*est.bounds[i]), est.units[i] or ""]
        if truth:
            row.insert(5, _g(truth[label]) if label in truth else "")
        table.append(row)
    widths = [max(len(h), *(len(r[j]) for r in table)) if table else len(h)
              for j, h in enumerate(header)]
    lines.append("    " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in table:
        lines.append("    " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if unc.nonidentifiable:
        lines.append("    not identifiable from these data (J^T W J singular along "
                     f"them): {', '.join(unc.nonidentifiable)}")
    lines += [f"    {line}" for line in unc.practical.lines()]
    fixed = dict(est.fixed)
    if fixed:
        text = ", ".join(f"{k}={_g(float(np.asarray(v).reshape(-1)[0]))}" if np.size(v) == 1
                         else f"{k}={np.asarray(v).tolist()}" for k, v in fixed.items())
        lines.append(f"    fixed: {text}")

    for key, title in (("priors", "[[Priors]]"), ("noise", "[[Noise models]]")):
        if objective.get(key):
            lines.append(title)
            lines += [f"    {k}: {v}" for k, v in objective[key].items()]
    pairs = []
    C = unc.correlation
    labels = est.labels
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            c = float(C[i, j]) if C.size else math.nan
            if math.isfinite(c) and abs(c) >= correlation_threshold:
                pairs.append((abs(c), labels[i], labels[j], c))
    if pairs:
        lines.append(f"[[Correlations]] (unreported correlations are < {correlation_threshold})")
        for _, a, b, c in sorted(pairs, reverse=True)[:20]:
            lines.append(f"    C({a}, {b}) = {c:+.4f}")
    if len(starts) > 1:
        lines.append("[[Starts]]")
        for s in starts:
            init = ", ".join(f"{k}={_g(v, 4)}" for k, v in list(s["initial"].items())[:6])
            lines.append(f"    start {s['start']}: chi2 = {_g(s['chi2'])}, {s['niter']} iter, "
                         f"{s['stop_reason']}; from {init}")
    return "\n".join(lines)


__all__ = ["report"]
