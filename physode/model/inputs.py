"""Time-dependent inputs: a forcing u(t) given as data, read inside the vector field.

``Input(t, values, kind)`` interpolates samples ``values`` at the knots ``t``: piecewise
``"constant"`` (right-continuous steps: a pump switched at the knots), ``"linear"``, or
``"cubic"`` (the natural cubic spline: C² through the samples, zero second derivative at
both ends; de Boor, *A Practical Guide to Splines*, rev. ed. 2001, ch. IV, and Burden &
Faires, *Numerical Analysis*, §3.5). Outside the knots the input holds its end values.

``u(t)`` is a torch function of ``t`` (any shape; a 0-d tensor inside a vector field) and
of ``values``: differentiable in both, vectorised (one ``searchsorted``), and free of
Python branches on data, so it runs inside ``torch.compile``. The knots are data, not
parameters. Its kinks (``.breakpoints``) are where a solver should restart:
``options={"tstops": u.breakpoints}`` (restricted to the span of the solve) keeps steps
from straddling them.

An ``Input`` is an ``nn.Module``: a submodule of a System moves with ``.to()``. ``values``
given as an ``nn.Parameter`` is a trainable parameter of the input, and a tensor that
requires grad stays differentiable (then the spline coefficients are recomputed at each
call, O(n²) for n knots); otherwise the input is immutable data and its coefficients are
computed once.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import solve_banded

from physode.errors import InvalidArgument
from physode.ode.times import check_times

KINDS = ("linear", "constant", "cubic")


def _natural_second_derivatives(x: np.ndarray) -> np.ndarray:
    """The matrix S with M = S v: the second derivatives of the natural cubic spline
    through (x_i, v_i), from the tridiagonal continuity equations (de Boor ch. IV)
    h_{i-1} M_{i-1} + 2 (h_{i-1} + h_i) M_i + h_i M_{i+1} = 6 (Δ_i - Δ_{i-1}), M_0 = M_{n-1} = 0."""
    n = x.size
    S = np.zeros((n, n))
    if n < 3:
        return S
    h = np.diff(x)
    m = n - 2
    ab = np.zeros((3, m))
    ab[0, 1:] = h[1:-1]
    ab[1] = 2 * (h[:-1] + h[1:])
    ab[2, :-1] = h[1:-1]
    D = np.zeros((m, n))  # 6 (Δ_i - Δ_{i-1}) as a matrix on v
    rows = np.arange(m)
    D[rows, rows] = 6 / h[:-1]
    D[rows, rows + 1] = -6 / h[:-1] - 6 / h[1:]
    D[rows, rows + 2] = 6 / h[1:]
    S[1:-1] = solve_banded((1, 1), ab, D)
    return S


def _take(v: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """``v[i]`` for an integer tensor ``i`` of any shape, as a gather (indexing with a 0-d
    tensor would read it back to Python, which breaks a compiled graph)."""
    return v.index_select(0, i.reshape(-1)).reshape((*i.shape, *v.shape[1:]))


class Input(torch.nn.Module):
    """A forcing ``u(t)`` from samples: ``Input(t, values, kind="linear", name="input")``.

    ``t``: strictly increasing, finite knots (1-D). ``values``: shape ``(len(t),)`` (a
    scalar input, ``u(t)`` shaped like ``t``) or ``(len(t), k)`` (k channels,
    ``u(t)`` of shape ``(*t.shape, k)``). ``kind``: ``"linear"``, ``"constant"`` (the value
    at the last knot at or before t) or ``"cubic"`` (natural spline). ``name`` appears in
    error messages. A malformed input is an :class:`~physode.errors.InvalidArgument`
    naming it.
    """

    values: torch.Tensor
    knots: torch.Tensor
    _S: torch.Tensor
    _M: torch.Tensor

    def __init__(self, t: object, values: object, kind: str = "linear", *,
                 name: str = "input") -> None:
        super().__init__()
        label = f"input {name!r}"
        if kind not in KINDS:
            raise InvalidArgument(f"{label}: unknown kind {kind!r}; choose one of "
                                  f"{', '.join(KINDS)}")
        x = check_times(t, decreasing=False, name=label)
        need = 1 if kind == "constant" else 2
        if x.size < need:
            raise InvalidArgument(f"{label}: kind {kind!r} needs at least {need} knots, got "
                                  f"{x.size}")
        if isinstance(values, torch.Tensor):
            v = values if values.is_floating_point() else values.to(torch.get_default_dtype())
        else:
            try:
                v = torch.as_tensor(np.asarray(values, dtype=np.float64),
                                    dtype=torch.get_default_dtype())
            except (TypeError, ValueError):
                raise InvalidArgument(f"{label}: values must be numbers, got "
                                      f"{type(values).__name__}") from None
        if v.ndim not in (1, 2) or v.shape[0] != x.size:
            raise InvalidArgument(f"{label}: values of shape {tuple(v.shape)} do not match "
                                  f"{x.size} knots; give shape ({x.size},) or ({x.size}, k)")
        bad = ~torch.isfinite(v.detach())
        if bool(bad.any()):
            i = int(bad.reshape(v.shape[0], -1).any(1).nonzero()[0])
            raise InvalidArgument(f"{label}: non-finite value at knot {i} (t={x[i]!r})")
        self.name = name
        self.kind = kind
        self.channels = None if v.ndim == 1 else int(v.shape[1])
        if isinstance(values, torch.nn.Parameter):
            self.values = values
        else:  # a tensor that requires grad stays in its graph (differentiable values)
            self.register_buffer("values", v if v.requires_grad else v.detach().clone())
        self.register_buffer("knots", torch.as_tensor(x, dtype=v.dtype, device=v.device))
        S = _natural_second_derivatives(x) if kind == "cubic" else np.zeros((0, 0))
        self.register_buffer("_S", torch.as_tensor(S, dtype=v.dtype, device=v.device))
        with torch.no_grad():
            M = self._S @ self.values if kind == "cubic" else self.values.new_zeros(0)
        self.register_buffer("_M", M)

    @property
    def breakpoints(self) -> torch.Tensor:
        """The knots (float64, 1-D): where ``u`` has a kink or a jump — the ``tstops``."""
        return self.knots.detach().to(torch.float64).clone()

    def forward(self, t: torch.Tensor | float) -> torch.Tensor:
        """``u(t)``: shape ``t.shape`` (scalar input) or ``(*t.shape, k)``."""
        x, v = self.knots, self.values
        if isinstance(t, torch.Tensor):  # computed in the wider of the two dtypes, so a
            dtype = torch.promote_types(t.dtype, x.dtype)  # float64 time is not rounded
            x, v, tt = x.to(dtype), v.to(dtype), t.to(dtype)
        else:
            tt = torch.tensor(float(t), dtype=x.dtype, device=x.device)
        n = x.shape[0]
        if self.kind == "constant":
            i = (torch.searchsorted(x, tt.detach(), right=True) - 1).clamp(0, n - 1)
            return _take(v, i)
        tc = torch.minimum(torch.maximum(tt, x[0]), x[-1])  # flat beyond the ends
        i = (torch.searchsorted(x, tc.detach(), right=True) - 1).clamp(0, n - 2)
        x0, x1 = _take(x, i), _take(x, i + 1)
        h = x1 - x0
        a, b = x1 - tc, tc - x0
        if self.channels is not None:
            a, b, h = a[..., None], b[..., None], h[..., None]
        v0, v1 = _take(v, i), _take(v, i + 1)
        if self.kind == "linear":
            return (a * v0 + b * v1) / h
        M = self._S.to(v.dtype) @ v if v.requires_grad else self._M.to(v.dtype)
        m0, m1 = _take(M, i), _take(M, i + 1)
        return ((m0 * a**3 + m1 * b**3) / (6 * h) + (v0 / h - m0 * h / 6) * a
                + (v1 / h - m1 * h / 6) * b)

    def extra_repr(self) -> str:
        shape = "" if self.channels is None else f", channels={self.channels}"
        return (f"name={self.name!r}, kind={self.kind!r}, knots={self.knots.shape[0]}, "
                f"t=[{float(self.knots[0]):.6g}, {float(self.knots[-1]):.6g}]{shape}")


__all__ = ["Input", "KINDS"]
