"""Is the problem stiff where an explicit solver gave up? The hint its error carries.

Called only on the failure path of :func:`physode.ode.loop.integrate` (max_steps exhausted,
step-size underflow), so its cost never matters. An explicit method's step on a stiff
problem is capped by its stability region, ``|h lambda| <~ 3`` for the dominant eigenvalue
lambda of the Jacobian (Hairer & Wanner, Solving ODEs II, IV.2: the stability boundary on
the negative real axis is 2.0 for Euler, 2.8 for RK4, 3.3 for DOPRI5), whatever the
tolerance. So when ``|h| rho(J) >= 1`` at the failure point the step is stability-bound,
not accuracy-bound: the problem looks stiff. rho(J) is estimated from finite differences
of ``func`` (no autograd: works for any ``func``).
"""

from __future__ import annotations

import math

import torch

from physode.ode.methods import METHODS
from physode.ode.methods.base import Method
from physode.ode.methods.step import VectorField, time_tensor

STIFF_H_RHO = 1.0  # |h| * spectral radius above which a step is stability-bound
_MAX_DENSE = 64  # states up to this size: eigenvalues of a finite-difference Jacobian


def spectral_radius(func: VectorField, t: float, y: torch.Tensor, iters: int = 30) -> float:
    """An estimate of the largest ``|eigenvalue|`` of df/dy at (t, y) (no gradients)."""
    with torch.no_grad():
        y = y.detach()
        tt = time_tensor(t, y)
        f0 = func(tt, y).reshape(-1)
        scale = float(y.abs().max()) if y.numel() else 0.0
        eps = math.sqrt(torch.finfo(y.dtype).eps) * max(scale, 1.0)

        def jv(v: torch.Tensor) -> torch.Tensor:
            return (func(tt, y + eps * v.reshape(y.shape)).reshape(-1) - f0) / eps

        n = y.numel()
        if n <= _MAX_DENSE:
            J = torch.stack([jv(e) for e in torch.eye(n, dtype=y.dtype, device=y.device)], 1)
            return float(torch.linalg.eigvals(J.double().cpu()).abs().max())
        v = torch.linspace(1.0, 2.0, n, dtype=y.dtype, device=y.device)  # no RNG use
        v = v / v.norm()
        rho = 0.0
        for _ in range(iters):  # power iteration: |J v| / |v| tends to rho
            w = jv(v)
            rho = float(w.norm())
            if not rho > 0 or not math.isfinite(rho):
                break
            v = w / rho
        return rho


def stiffness_hint(func: VectorField, method: Method, t: float, y: torch.Tensor,
                   h: float | None) -> str:
    """A sentence naming the stiff solvers when ``method`` is not one and the last step
    ``h`` at ``(t, y)`` was stability-bound (or, at an underflow, the stability limit lies
    below the floating-point resolution of t); else ``""``."""
    if h is None or method.stiff:
        return ""
    # a step cannot be smaller than the resolution of t (the underflow test's threshold)
    h = max(abs(h), 10 * torch.finfo(y.dtype).eps * abs(t))
    try:
        rho = spectral_radius(func, t, y)
    except Exception:  # a func that cannot be probed gets no hint, not a second error
        return ""
    if not math.isfinite(rho) or h * rho < STIFF_H_RHO:
        return ""
    stiff = [name for name, m in METHODS.items() if m.stiff]
    best = [name for name in ADVICE if name in stiff]
    names = best + [name for name in stiff if name not in best]
    advice = ", ".join(f"method='{n}'{ADVICE.get(n, '')}" for n in names)
    return (f"the problem looks stiff here: h * rho(df/dy) = {h * rho:.3g} >= {STIFF_H_RHO:g} "
            f"(h={h:.3g}, spectral radius {rho:.3g}), so explicit steps are limited by "
            f"stability, not accuracy; try a stiff solver: {advice}")


ADVICE = {
    "rodas5p": " (fewest steps from rtol 1e-4 down)",
    "rodas4": "",
    "rosenbrock23": " (loose tolerances)",
}
"""The stiff methods in the order the hint recommends them, and why: on the kinetics of
``benchmarks/stiff_kinetics.py`` RODAS5P takes 1.3-3x fewer steps than RODAS4 from rtol
1e-4 to 1e-8 and is faster at each (Steinebach 2023 reports the same on his benchmarks)."""
