"""The scaled error norm of a step's local error estimate: the number the controller reads.

Pure tensor code (a compiled stepper fuses it into the step); :func:`error_ratio` is the
same as a Python float, computed outside any graph.
"""

from __future__ import annotations

import torch

from physode.ode.methods.step import Step

Tol = float | torch.Tensor
"""A tolerance: a positive float, or a tensor broadcasting against the state."""


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.square().mean().sqrt()


def error_norm(step: Step, y0: torch.Tensor, rtol: Tol, atol: Tol) -> torch.Tensor:
    """Scaled RMS norm of the local error estimate (a 0-d tensor); accept when <= 1.

    The scale is ``atol + rtol * max(|y0|, |y1|)`` (Hairer, Nørsett & Wanner I, II.4,
    eq. 4.10). DOP853 combines its two estimates as in Hairer's code (II.10):
    ``|err5|^2 / sqrt(|err5|^2 + 0.01 |err3|^2)``.
    """
    if step.err is None:
        raise ValueError("error_norm needs a step with an error estimate (an adaptive method)")
    y1 = step.y1.detach()
    scale = atol + rtol * torch.maximum(y0.detach().abs(), y1.abs())
    e5 = step.err.detach() / scale
    if step.err3 is None:
        return _rms(e5)
    e3 = step.err3.detach() / scale
    n5, n3 = e5.square().sum(), e3.square().sum()
    denom = (n5 + 0.01 * n3) * e5.numel()
    return torch.where(denom > 0, n5 / denom.sqrt(), torch.zeros_like(n5))


def error_ratio(step: Step, y0: torch.Tensor, rtol: Tol, atol: Tol) -> float:
    """:func:`error_norm` as a Python float, outside any graph (one host sync per step)."""
    with torch.no_grad():
        return float(error_norm(step, y0, rtol, atol))


__all__ = ["Tol", "error_norm", "error_ratio"]
