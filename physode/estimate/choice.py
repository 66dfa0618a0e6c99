"""``optimizer="auto"``: choose the optimiser from the shape of the problem, and say why.

A least-squares fit of a physical model with a modest number of unknowns is what
Levenberg-Marquardt is for: it uses the residual Jacobian (exact, from forward
sensitivities: :mod:`physode.estimate.sensitivity`), is quadratically convergent near a
zero-residual solution and close to it for small residuals (Nocedal & Wright, *Numerical
Optimization*, 2nd ed., 2006, sec. 10.3), and needs no line search. Measured (issue 19):
a chain of 10 masses with 21 unknowns, LM 25-34 s, L-BFGS 269 s (197 of its 200
iterations); SIR with 2 unknowns, both equal. Its cost grows with the number of unknowns
P twice over — the augmented state carries P tangents and the trust-region step factors a
P x P matrix — so beyond a few hundred unknowns, and for neural terms (thousands of
weights), L-BFGS with adjoint (ACA) gradients, whose cost per iteration does not grow with
P, is the choice (Nocedal & Wright, sec. 7.2). LM also needs at least as many data as
unknowns and a tolerance to stop on.
"""

from __future__ import annotations

import numpy as np

#: Most fitted values for which ``"auto"`` picks Levenberg-Marquardt.
LM_MAX_UNKNOWNS = 300


def choose_optimizer(n_physical: int, n_learnable: int, n_data: int,
                     tolerances: tuple[float, float, float] = (1e-12, 1e-12, 1e-12)
                     ) -> tuple[str, str]:
    """``(optimizer, reason)`` for a fit of ``n_physical`` physical values and
    ``n_learnable`` learnable weights to ``n_data`` residuals (``tolerances``: ftol, xtol,
    gtol; LM needs one above the machine epsilon to stop)."""
    total = n_physical + n_learnable
    if n_learnable:
        return "lbfgs", (f"auto: {n_learnable} learnable weights (a neural term) -> L-BFGS "
                         "with adjoint gradients, whose cost does not grow with the number "
                         "of unknowns")
    if total > LM_MAX_UNKNOWNS:
        return "lbfgs", (f"auto: {total} unknowns, more than {LM_MAX_UNKNOWNS} -> L-BFGS "
                         "(LM would carry one sensitivity per unknown)")
    if n_data < total:
        return "lbfgs", (f"auto: fewer data ({n_data}) than unknowns ({total}) -> L-BFGS "
                         "(LM needs at least as many)")
    if max(tolerances) < np.finfo(float).eps:
        return "lbfgs", ("auto: ftol, xtol and gtol all below the machine epsilon leave LM "
                         "no way to stop -> L-BFGS")
    return "lm", (f"auto: least squares with {total} unknown{'s' if total != 1 else ''} and "
                  "no learnable weights -> Levenberg-Marquardt on the exact Jacobian "
                  "(forward sensitivities)")


__all__ = ["LM_MAX_UNKNOWNS", "choose_optimizer"]
