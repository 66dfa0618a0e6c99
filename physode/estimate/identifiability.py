"""Practical identifiability at a least-squares estimate: parameters at a bound, and
combinations of parameters the data barely determine.

Structural non-identifiability (J^T W J exactly singular) is found by
:func:`physode.estimate.uncertainty.gauss_newton`. The *practical* kind — a model that
responds to a combination of parameters so weakly that its standard error is huge — is
what real fits meet most (Raue et al., "Structural and practical identifiability analysis
of partially observed dynamical models by exploiting the profile likelihood",
Bioinformatics 25, 2009, sec. 2.2; Gutenkunst et al., "Universally sloppy parameter
sensitivities in systems biology models", PLoS Comput. Biol. 3, 2007). Three signs are
flagged here, each from the Gauss-Newton covariance already computed:

- ``|correlation| > CORRELATION_MAX`` between two parameters;
- a relative standard error ``stderr / |value|`` above ``REL_STDERR_MAX``;
- a near-null eigenvector of the Fisher information ``F = J_r^T J_r / s^2`` in relative
  coordinates (``J_r = dr / d ln|x|``, so every parameter is measured in "fractions of its
  value"): an eigenvalue ``lambda`` means the combination ``sum_i v_i ln|x_i|`` is known
  to ``1 / sqrt(lambda)``; above ``REL_STDERR_MAX`` it is named, with the parameters whose
  weight exceeds ``NAME_WEIGHT`` (Gutenkunst et al. 2007, "sloppy" eigendirections).

A parameter *at a bound* is not a parameter with a tiny standard error, nor a
non-identifiable one: the optimum lies on the boundary, the quadratic (Gaussian)
approximation does not hold there, and the Gauss-Newton standard error would be an
artefact of the bounding transform (whose derivative vanishes at the bound). A value is at
a bound when it is within a tiny fraction of the interval of it, or closer to it than a
tenth of its standard error computed without the transform (an optimiser that stops just
short of a bound it pushes against). Such
parameters are reported as "at bound", get no standard error, and are held at their
value while the covariance of the others is computed (as a constrained estimate is
treated in Seber & Wild, *Nonlinear Regression*, 1989, sec. 2.1.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: A parameter within this fraction of its bounded interval (or of its scale, for a
#: one-sided bound) from a bound is at that bound.
AT_BOUND_RTOL = 1e-6
#: A value closer to a bound than this many (physical) standard errors is at that bound.
AT_BOUND_STDERR = 0.1
#: Pairs correlated beyond this are flagged.
CORRELATION_MAX = 0.99
#: A relative standard error (or the standard error of a log-combination) above this is
#: flagged: the data do not fix the value to within 100 % of itself.
REL_STDERR_MAX = 1.0
#: Weight of a parameter in an eigendirection above which it is named in the combination.
NAME_WEIGHT = 0.1


@dataclass(frozen=True)
class Combination:
    """A poorly determined direction: ``sum_i weight_i ln|x_i|`` known only to ``stderr``."""

    weights: dict[str, float]
    stderr: float

    def text(self) -> str:
        """``"+0.71 ln|kon| -0.71 ln|koff|"``."""
        return " ".join(f"{w:+.2f} ln|{k}|" for k, w in self.weights.items())


@dataclass
class Practical:
    """The practical-identifiability findings of one fit (labels refer to free scalars)."""

    at_bound: list[str] = field(default_factory=list)
    correlated: list[tuple[str, str, float]] = field(default_factory=list)
    large_stderr: list[tuple[str, float]] = field(default_factory=list)
    combinations: list[Combination] = field(default_factory=list)

    @property
    def flagged(self) -> list[str]:
        """Every label named by a practical-identifiability finding (not at-bound ones)."""
        seen: dict[str, None] = {}
        for a, b, _ in self.correlated:
            seen.setdefault(a)
            seen.setdefault(b)
        for lab, _ in self.large_stderr:
            seen.setdefault(lab)
        for c in self.combinations:
            for lab in c.weights:
                seen.setdefault(lab)
        return list(seen)

    def lines(self) -> list[str]:
        """Report lines, one per finding (empty when there is nothing to say)."""
        out = []
        if self.at_bound:
            out.append(f"at bound (no standard error; held there for the covariance of the "
                       f"others): {', '.join(self.at_bound)}")
        for a, b, c in self.correlated:
            out.append(f"practically non-identifiable: {a} and {b} correlated at {c:+.4f}")
        for lab, rel in self.large_stderr:
            out.append(f"practically non-identifiable: {lab} has a relative standard error "
                       f"of {rel * 100:.3g} %")
        for comb in self.combinations:
            out.append(f"practically non-identifiable combination: {comb.text()} is known "
                       f"only to +-{comb.stderr:.3g} (near-null eigenvector of the Fisher "
                       "information, relative units)")
        return out


def at_bound(values: np.ndarray, bounds: list[tuple[float, float]], scales: np.ndarray,
             dxdu: np.ndarray) -> np.ndarray:
    """Boolean mask of the values at a bound: the transform's derivative vanished there, or
    the distance to a finite bound is below :data:`AT_BOUND_RTOL` of the interval's width
    (two finite bounds) or of ``max(|bound|, scale)`` (one; ``scale`` is typically the
    initial value)."""
    out = np.zeros(len(values), dtype=bool)
    for i, (x, (lo, hi)) in enumerate(zip(values, bounds)):
        if not math.isfinite(float(x)) or (math.isinf(lo) and math.isinf(hi)):
            continue
        if (math.isfinite(lo) or math.isfinite(hi)) and dxdu[i] == 0:
            out[i] = True
            continue
        if math.isfinite(lo) and math.isfinite(hi):
            tol = AT_BOUND_RTOL * (hi - lo)
        else:
            b = lo if math.isfinite(lo) else hi
            tol = AT_BOUND_RTOL * max(abs(b), abs(float(scales[i])), np.finfo(float).tiny)
        dist = min(x - lo if math.isfinite(lo) else math.inf,
                   hi - x if math.isfinite(hi) else math.inf)
        out[i] = dist <= tol
    return out


def within_stderr(values: np.ndarray, bounds: list[tuple[float, float]],
                  stderr: np.ndarray) -> np.ndarray:
    """Boolean mask of the values whose distance to a finite bound is below
    :data:`AT_BOUND_STDERR` physical standard errors (``stderr`` computed without the
    bounding transform): an optimiser stopped just short of a bound it pushes against —
    L-BFGS does, in the logistic coordinates — leaves such a value."""
    out = np.zeros(len(values), dtype=bool)
    for i, (x, (lo, hi)) in enumerate(zip(values, bounds)):
        se = float(stderr[i])
        if not (math.isfinite(se) and math.isfinite(float(x))):
            continue
        dist = min(x - lo if math.isfinite(lo) else math.inf,
                   hi - x if math.isfinite(hi) else math.inf)
        out[i] = dist < AT_BOUND_STDERR * se
    return out


def practical(labels: list[str], values: np.ndarray, cov: np.ndarray, stderr: np.ndarray,
              corr: np.ndarray) -> Practical:
    """Correlated pairs, large relative standard errors and poorly determined
    log-combinations from the physical covariance (NaN rows: excluded parameters)."""
    found = Practical()
    ok = np.isfinite(stderr) & np.isfinite(values)
    P = len(labels)
    for i in range(P):
        for j in range(i + 1, P):
            c = float(corr[i, j]) if ok[i] and ok[j] else math.nan
            if math.isfinite(c) and abs(c) > CORRELATION_MAX:
                found.correlated.append((labels[i], labels[j], c))
    for i in range(P):
        if ok[i] and values[i] != 0:
            rel = float(stderr[i] / abs(values[i]))
            if rel > REL_STDERR_MAX:
                found.large_stderr.append((labels[i], rel))
    idx = np.flatnonzero(ok & (values != 0))
    if idx.size >= 2:
        scale = np.abs(values[idx])
        cov_rel = cov[np.ix_(idx, idx)] / np.outer(scale, scale)  # covariance of ln|x|
        with np.errstate(invalid="ignore", over="ignore"):
            w, v = np.linalg.eigh((cov_rel + cov_rel.T) / 2)
        for k in np.argsort(w)[::-1]:
            var = float(w[k])
            if not (math.isfinite(var) and var > REL_STDERR_MAX**2):
                break
            vec = v[:, k] * (1 if v[np.argmax(np.abs(v[:, k])), k] > 0 else -1)
            named = {labels[idx[i]]: float(vec[i]) for i in np.argsort(-np.abs(vec))
                     if abs(vec[i]) > NAME_WEIGHT}
            if len(named) >= 2:  # one parameter alone is already a large relative stderr
                found.combinations.append(Combination(named, math.sqrt(var)))
    return found


__all__ = ["AT_BOUND_RTOL", "AT_BOUND_STDERR", "CORRELATION_MAX", "NAME_WEIGHT",
           "REL_STDERR_MAX", "Combination", "Practical", "at_bound", "practical",
           "within_stderr"]
