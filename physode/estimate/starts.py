"""Multistart: starting points drawn within the parameters' bounds.

Each extra start redraws every free physical parameter (element by element): log-uniform
between the bounds for positive parameters, uniform for the others, and +-1 decade (or
``+-max(|value|, 1)``) around the current value where a bound is missing. Unknown initial
states and learnable weights keep their values. The draws are reproducible from ``seed``
(numpy's ``default_rng``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from physode.model.parameter import Parameter
from physode.model.system import System


def draw_starts(system: System, x0: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """``n`` starting vectors like ``x0`` (the fitted vector: ``system.free_vector()``, then
    any learnable weights), physical parameters redrawn, everything else kept."""
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    specs = system.parameter_specs()
    out = []
    for _ in range(n):
        x = x0.copy()
        offset = 0
        for name, p in zip(system.free_names(), system.free_parameters()):
            m = p.numel()
            if not name.startswith("y0."):
                spec = specs[name]
                cur = system.param(name).detach().reshape(-1).cpu().numpy()
                drawn = np.array([draw(spec, float(c), rng) for c in cur])
                u = spec.to_unconstrained(torch.as_tensor(drawn).reshape(p.shape))
                x[offset:offset + m] = u.reshape(-1).numpy()
            offset += m
        out.append(x)
    return out


def draw(spec: Parameter, current: float, rng: np.random.Generator) -> float:
    """One value for a parameter declared by ``spec``, now at ``current``."""
    lo, hi = spec.lower, spec.upper
    a: float
    b: float
    if spec.positive:
        a = lo if lo > 0 else (hi * 1e-3 if math.isfinite(hi) else current / 10)
        b = hi if math.isfinite(hi) else current * 10
        a = max(a, current / 10) if not math.isfinite(hi) and lo <= 0 else a
        v = math.exp(rng.uniform(math.log(a), math.log(b)))
    else:
        width = max(abs(current), 1.0)
        a = lo if math.isfinite(lo) else current - width
        b = hi if math.isfinite(hi) else current + width
        v = float(rng.uniform(a, b))
    # strictly inside the domain (the transforms have no preimage of the boundary)
    span = (b - a) if math.isfinite(b - a) else 1.0
    return float(min(max(v, a + 1e-9 * span), b - 1e-9 * span)) if lo < v < hi else float(
        min(max(v, lo + 1e-6 * span), hi - 1e-6 * span))


__all__ = ["draw", "draw_starts"]
