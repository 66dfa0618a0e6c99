"""Parameter uncertainty (Gauss-Newton), identifiability, and the fit statistics (AIC/BIC).

Near the least-squares estimate the weighted residuals are linear in the parameters,
``r(theta) ~ r + J (theta - theta_hat)``, and the covariance of the estimate is
``s^2 (J^T J)^-1`` with J the Jacobian of the *weighted* residuals (so J^T J = J^T W J of
the unweighted ones) and ``s^2 = 1`` when sigma is known, ``s^2 = chi2 / (N - P)`` when
one shared noise level is estimated (Bates & Watts, *Nonlinear Regression Analysis and Its
Applications*, 1988, sec. 2.3; Seber & Wild, *Nonlinear Regression*, 1989, sec. 2.1).
The fit runs in unconstrained coordinates u; the covariance is carried to the physical
values x by the chain rule, ``Cov_x = D Cov_u D`` with ``D = diag(dx/du)`` (the delta
method; the transforms are element-wise).

When J^T J is singular (or numerically so), some combination of parameters does not
change the model: the right singular vectors of the column-scaled J with negligible
singular values name the parameters involved, which are reported as not identifiable
with NaN standard errors; the others get the pseudo-inverse covariance.

Given the values and bounds, parameters at a bound are held there (no standard error) and
the practical identifiability of the others is checked (:mod:`physode.estimate.identifiability`).

Information criteria follow lmfit's convention (and Burnham & Anderson, *Model Selection
and Multimodel Inference*, 2nd ed., 2002, sec. 2.2 and 6.4): with N data, P fitted values
and chi2 the weighted sum of squares, ``AIC = N ln(chi2/N) + 2P`` and
``BIC = N ln(chi2/N) + P ln N``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from physode.estimate.identifiability import Practical, at_bound, practical, within_stderr

#: Singular values of the column-normalised Jacobian below this fraction of the largest
#: count as zero (sqrt of float64 epsilon would be too strict for solver-accurate J).
RANK_RTOL = 1e-8
#: A parameter is named non-identifiable when its weight in a null direction exceeds this.
NULL_WEIGHT = 0.1


@dataclass
class Uncertainty:
    """Covariance, standard errors and correlation in physical parameter space."""

    covariance: np.ndarray
    stderr: np.ndarray
    correlation: np.ndarray
    nonidentifiable: list[str] = field(default_factory=list)
    scale: float = 1.0
    condition: float = float("nan")
    #: labels whose Jacobian column is zero: the model does not respond to them at all here.
    insensitive: list[str] = field(default_factory=list)
    #: labels at a bound, correlated pairs, large relative stderrs, sloppy combinations
    practical: Practical = field(default_factory=Practical)

    @property
    def at_bound(self) -> list[str]:
        """Labels whose estimate lies on a bound (no standard error)."""
        return self.practical.at_bound


@dataclass(frozen=True)
class Statistics:
    """Goodness of fit: chi-square, reduced chi-square, AIC, BIC and the data counts."""

    chi2: float
    redchi: float
    aic: float
    bic: float
    n_data: int
    n_params: int
    n_learnable: int
    sigma_estimated: bool
    noise_sigma: float


def information_criteria(chi2: float, n_data: int, n_params: int) -> tuple[float, float]:
    """(AIC, BIC) from chi2 as in lmfit (see module docstring)."""
    if n_data <= 0 or not chi2 > 0 or not math.isfinite(chi2):
        tiny = np.finfo(float).tiny
        chi2 = max(chi2, tiny) if math.isfinite(chi2) else chi2
    neg2ll = n_data * math.log(chi2 / n_data) if math.isfinite(chi2) else math.inf
    return neg2ll + 2 * n_params, neg2ll + math.log(n_data) * n_params


def fit_statistics(chi2: float, n_data: int, n_physical: int, n_learnable: int,
                   sigma_estimated: bool) -> Statistics:
    """The :class:`Statistics` of a fit of ``n_physical + n_learnable`` values to
    ``n_data`` weighted residuals with sum of squares ``chi2``."""
    n_free = n_physical + n_learnable
    dof = n_data - n_free
    redchi = chi2 / dof if dof > 0 else math.nan
    aic, bic = information_criteria(chi2, n_data, n_free)
    noise = math.sqrt(redchi) if sigma_estimated and redchi == redchi else 1.0
    return Statistics(chi2, redchi, aic, bic, n_data, n_physical, n_learnable,
                      sigma_estimated, noise)


def gauss_newton(J: np.ndarray, labels: list[str], dxdu: np.ndarray, chi2: float,
                 n_data: int, n_params: int, sigma_estimated: bool, *,
                 values: np.ndarray | None = None,
                 bounds: list[tuple[float, float]] | None = None,
                 scales: np.ndarray | None = None) -> Uncertainty:
    """Covariance of the physical parameters from the weighted-residual Jacobian ``J``
    (``(n_residuals, P)``, w.r.t. the unconstrained vector) at the estimate.

    With ``values`` and ``bounds`` (physical, one per label; ``scales``: a typical size of
    each, e.g. the initial values) parameters at a bound are held there and the practical
    identifiability of the others is assessed (``Uncertainty.practical``)."""
    P = J.shape[1]
    nan = np.full(P, np.nan)
    if P == 0:
        return Uncertainty(np.zeros((0, 0)), nan, np.zeros((0, 0)))
    dof = n_data - n_params
    scale = chi2 / dof if sigma_estimated and dof > 0 else 1.0
    if sigma_estimated and dof <= 0:
        scale = float("nan")
    if not np.all(np.isfinite(J)):
        return Uncertainty(np.full((P, P), np.nan), nan, np.full((P, P), np.nan), list(labels),
                           scale)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        if values is None or bounds is None:
            return _gauss_newton(J, labels, dxdu, scale)
        x = np.asarray(values, dtype=np.float64)
        sizes = np.abs(x) if scales is None else np.asarray(scales, dtype=np.float64)
        D = np.asarray(dxdu, dtype=np.float64)
        held = at_bound(x, bounds, sizes, D)
        keep = np.flatnonzero(~held)
        if keep.size:  # then: closer to a bound than a fraction of the physical stderr
            Jx = J[:, keep] / D[keep]
            phys = _gauss_newton(Jx, [labels[i] for i in keep], np.ones(keep.size), scale)
            held[keep[within_stderr(x[keep], [bounds[i] for i in keep], phys.stderr)]] = True
            keep = np.flatnonzero(~held)
        sub = _gauss_newton(J[:, keep], [labels[i] for i in keep], np.asarray(dxdu)[keep],
                            scale) if keep.size else Uncertainty(np.zeros((0, 0)), np.zeros(0),
                                                                 np.zeros((0, 0)))
        unc = Uncertainty(np.full((P, P), np.nan), nan.copy(), np.full((P, P), np.nan),
                          sub.nonidentifiable, scale, sub.condition, sub.insensitive)
        unc.covariance[np.ix_(keep, keep)] = sub.covariance
        unc.correlation[np.ix_(keep, keep)] = sub.correlation
        unc.stderr[keep] = sub.stderr
        unc.practical = practical(labels, x, unc.covariance, unc.stderr, unc.correlation)
        unc.practical.at_bound = [labels[i] for i in np.flatnonzero(held)]
        return unc


def _gauss_newton(J: np.ndarray, labels: list[str], dxdu: np.ndarray,
                  scale: float) -> Uncertainty:
    P = J.shape[1]
    norms = np.linalg.norm(J, axis=0)
    insensitive = [lab for lab, n in zip(labels, norms) if n == 0]
    safe = np.where(norms > 0, norms, 1.0)
    Js = J / safe
    _, sv, vt = np.linalg.svd(Js, full_matrices=False)
    smax = sv[0] if sv.size else 0.0
    tol = RANK_RTOL * max(smax, np.finfo(float).tiny)
    null = [vt[i] for i in range(sv.size) if sv[i] <= tol]
    bad = np.zeros(P, dtype=bool)
    bad |= norms == 0
    for v in null:
        bad |= np.abs(v) > NULL_WEIGHT
    cond = float(smax / sv[-1]) if sv.size and sv[-1] > 0 else float("inf")
    inv_sv = np.where(sv > tol, 1.0 / np.where(sv > tol, sv, 1.0) ** 2, 0.0)
    cov_s = (vt.T * inv_sv) @ vt  # (Js^T Js)^+
    cov_u = cov_s / np.outer(safe, safe) * scale
    D = np.asarray(dxdu, dtype=np.float64)
    cov = cov_u * np.outer(D, D)
    cov[bad, :] = np.nan
    cov[:, bad] = np.nan
    stderr = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    stderr[bad] = np.nan
    corr = cov / np.outer(stderr, stderr)
    return Uncertainty(cov, stderr, corr, [lab for lab, b in zip(labels, bad) if b], scale,
                       cond, insensitive)


__all__ = ["NULL_WEIGHT", "RANK_RTOL", "Statistics", "Uncertainty", "fit_statistics",
           "gauss_newton", "information_criteria"]
