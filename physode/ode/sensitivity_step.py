"""One RODAS4 step of the state and its forward sensitivities, staggered on the state's
LU factors: the pieces shared by the eager per-sample loop
(:mod:`physode.ode.sensitivity_batch`, where the method and its references are described)
and the compiled one (:mod:`physode.ode.sensitivity_loop`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from physode.ode.methods.rosenbrock import RODAS4_TABLEAU, RODAS5P_TABLEAU, RosenbrockTableau
from physode.ode.methods.small_inverse import inverse

Fn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class SensitivityField:
    """``rhs(t, x, p) -> (..., n)``, ``jacobian -> (..., n, n)``, ``param_jacobian ->
    (..., n, P)``; each broadcasts over leading axes of ``t``, ``x`` and ``p``.

    Optional closed forms of the second-order blocks (generated symbolically for SBML
    models, :mod:`physode.petab.codegen`): ``jacobian_dir(t, x, p, u) = sum_k u_k
    dJ/dx_k``, ``param_jacobian_dir(t, x, p, u) = sum_k u_k dF/dx_k``, and for a
    non-autonomous field ``time_derivative`` (df/dt), ``jacobian_dt`` and
    ``param_jacobian_dt``. Without them, forward-mode automatic differentiation
    provides them (slower: one dual evaluation along every state direction per step).
    """

    rhs: Fn
    jacobian: Fn
    param_jacobian: Fn
    autonomous: bool = False
    jacobian_dir: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None = None
    param_jacobian_dir: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None = None
    time_derivative: Fn | None = None
    jacobian_dt: Fn | None = None
    param_jacobian_dt: Fn | None = None

    @property
    def closed_form(self) -> bool:
        """Whether the second-order blocks come from the field's own functions."""
        return (self.jacobian_dir is not None and self.param_jacobian_dir is not None
                and (self.autonomous or None not in (self.time_derivative, self.jacobian_dt,
                                                     self.param_jacobian_dt)))


@dataclass(frozen=True)
class SensitivityModel:
    """What a system offers for staggered sensitivities (:meth:`System.sensitivity_model`,
    used by the least-squares fits): its dynamics as a :class:`SensitivityField` with
    closed-form blocks, and ``parameters()``, the field's parameter vector ``p (P,)`` as a
    differentiable function of the system's parameters (so a fit gets ``dp/dtheta`` by
    autograd)."""

    field: SensitivityField
    parameters: Callable[[], Tensor]


@dataclass
class SensitivityResult:
    """``x``: ``(B, T, n)`` states at the output times; ``s``: ``(B, T, n, q)``
    sensitivities; ``ok``: ``(B,)`` whether the sample reached the last output (rows of
    failed samples are NaN past where they stopped); ``steps``/``rejected``: ``(B,)``."""

    x: Tensor
    s: Tensor
    ok: Tensor
    steps: Tensor
    rejected: Tensor


_TAB = RODAS4_TABLEAU
TABLEAUS = {t.name: t for t in (RODAS4_TABLEAU, RODAS5P_TABLEAU)}
"""The stiffly accurate Rosenbrock methods the staggered solvers step."""
_SAFETY, _FAC_MIN, _FAC_MAX = 0.9, 0.2, 6.0  # Hairer's RODAS defaults (fac1 = 5, fac2 = 1/6)


def _rms(v: Tensor, scale: Tensor) -> Tensor:
    """Root mean square of ``v / scale`` over all but the first axis."""
    return (v / scale).flatten(1).square().mean(dim=1).sqrt()


SMALL = 32
"""Contractions up to this length are products and sums inside compiled graphs."""


def small_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` (broadcast over leading axes). Inside a compiled graph and for a short
    contraction, as a product and a sum, which inductor fuses into one loop: the batched
    matrix products it otherwise calls out to spend most of their time in ATen's generic
    small-matrix path (measured: 42 % of a compiled cascade sensitivity solve)."""
    if torch.compiler.is_compiling() and a.shape[-1] <= SMALL:
        if a.ndim == 1:  # vector @ matrix, as ``@`` treats it
            return (a.unsqueeze(-1) * b).sum(-2)
        return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)
    return a @ b


def _stage_eval(field: SensitivityField, t: Tensor, x: Tensor, s: Tensor, p: Tensor,
                dp: Tensor) -> tuple[Tensor, Tensor]:
    """``f`` and ``G = J S + F D`` at one stage point."""
    return (field.rhs(t, x, p),
            small_matmul(field.jacobian(t, x, p), s)
            + small_matmul(field.param_jacobian(t, x, p), dp))


def _start_eval(field: SensitivityField, t: Tensor, x: Tensor, s: Tensor, p: Tensor,
                dp: Tensor) -> tuple[Tensor, ...]:
    """At a step's start: ``f0``, ``J``, ``G0``, ``dG/dx_k`` for every state direction
    ``k`` (``(n, B, n, q)``; for more than :data:`HU_PER_STAGE_ABOVE` states an empty
    tensor instead, and the stages ask :func:`_hu_eval` for ``H u`` along their own ``u``)
    and, for a non-autonomous field, ``f_t`` and ``G_t``."""
    n, B = x.shape[1], x.shape[0]
    J = field.jacobian(t, x, p)
    G0 = small_matmul(J, s) + small_matmul(field.param_jacobian(t, x, p), dp)
    dG = x.new_zeros(0)
    if n <= HU_PER_STAGE_ABOVE:
        eye = torch.eye(n, dtype=x.dtype)[:, None, :].expand(n, B, n)
        assert field.jacobian_dir is not None and field.param_jacobian_dir is not None
        dG = (small_matmul(field.jacobian_dir(t, x, p, eye), s)
              + small_matmul(field.param_jacobian_dir(t, x, p, eye), dp))
    out = (field.rhs(t, x, p), J, G0, dG)
    if field.autonomous:
        return out
    assert field.time_derivative is not None and field.jacobian_dt is not None
    assert field.param_jacobian_dt is not None
    return (*out, field.time_derivative(t, x, p),
            small_matmul(field.jacobian_dt(t, x, p), s)
            + small_matmul(field.param_jacobian_dt(t, x, p), dp))


HU_PER_STAGE_ABOVE = 16
"""States above which ``H u`` is evaluated per stage rather than from all ``n`` directions
formed once per step. RODAS5P sensitivities, measured: the 7-species cascade 47 ms (all
directions) against 68 ms (per stage) compiled; the 52-species chain 582 ms against
195 ms."""


def _hu_eval(field: SensitivityField, t: Tensor, x: Tensor, s: Tensor, p: Tensor,
             dp: Tensor, u: Tensor) -> tuple[Tensor]:
    """``H u = sum_k u_k dG/dx_k`` at the step's start, along one stage's ``u (B, n)``: one
    directional evaluation of the closed-form blocks. Forming ``dG/dx_k`` for all ``n``
    directions once per step costs ``n`` such evaluations (in one vectorised call): cheaper
    for a few states, dearer than the stages' (RODAS5P: 8) single ones for many."""
    assert field.jacobian_dir is not None and field.param_jacobian_dir is not None
    return (small_matmul(field.jacobian_dir(t, x, p, u), s)
            + small_matmul(field.param_jacobian_dir(t, x, p, u), dp),)


Evaluate = Callable[..., tuple[Tensor, ...]]
"""``evaluate(0, t, x, s, p, dp)``: a step's start values; ``evaluate(1, ...)``: a stage's."""


def _factor(W: Tensor) -> Callable[[Tensor], Tensor]:
    """Solves with ``W (B, n, n)``: LAPACK's LU when eager; inside a compiled loop the
    inverse (:func:`physode.ode.methods.small_inverse.inverse`), whose products inductor
    fuses (see
    :class:`physode.ode.methods.jacobian.InverseSolver`)."""
    if torch.compiler.is_compiling():
        inv = inverse(W)
        return lambda r: small_matmul(inv, r)
    LU, piv, _ = torch.linalg.lu_factor_ex(W)
    return lambda r: torch.linalg.lu_solve(LU, piv, r)


def _step(evaluate: Evaluate, t: Tensor, h: Tensor, x: Tensor, s: Tensor, p: Tensor,
          dp: Tensor, tab: RosenbrockTableau = _TAB) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step of every sample by the Rosenbrock method ``tab`` (RODAS4 or RODAS5P, in
    Hairer's transformed variables): ``(x1, s1, err_x, err_s)``."""
    f0, J, G0, dG, *tder = evaluate(0, t, x, s, p, dp)
    n = x.shape[1]
    hg = (h * tab.gamma)[:, None, None]
    solve = _factor(torch.eye(n, dtype=x.dtype) / hg - J)
    U: list[Tensor] = []
    V: list[Tensor] = []
    hc = h[:, None]
    hcc = h[:, None, None]
    for i in range(tab.stages):
        if i == 0:
            fx, fs = f0, G0
        else:
            xi, si = x, s
            for j in range(i):
                a = tab.a[i][j]
                if a:
                    xi = xi + a * U[j]
                    si = si + a * V[j]
            fx, fs = evaluate(1, t + tab.alpha[i] * h, xi, si, p, dp)
            for j in range(i):
                c = tab.c[i][j]
                if c:
                    fx = fx + (c / hc) * U[j]
                    fs = fs + (c / hcc) * V[j]
        g = tab.gammas[i]
        if tder and g:
            fx = fx + (g * hc) * tder[0]
            fs = fs + (g * hcc) * tder[1]
        u = solve(fx[:, :, None])[:, :, 0]
        # H u = sum_k u_k dG/dx_k: along u directly, or from the n precomputed directions
        hu = (evaluate(2, t, x, s, p, dp, u)[0] if dG.numel() == 0
              else (dG * u.T[:, :, None, None]).sum(0))
        v = solve(fs + hu)
        U.append(u)
        V.append(v)
    return (_combine(x, tab.m, U), _combine(s, tab.m, V), _combine(None, tab.e, U),
            _combine(None, tab.e, V))


def _combine(base: Tensor | None, coefs: tuple[float, ...], vecs: list[Tensor]) -> Tensor:
    """``base + sum_i coefs_i vecs_i`` over the non-zero coefficients."""
    out = base
    for c, v in zip(coefs, vecs):
        if c:
            term = v if c == 1.0 else c * v
            out = term if out is None else out + term
    assert out is not None
    return out


def next_step_size(h: Tensor, h_free: Tensor, err: Tensor, accept: Tensor, hit: Tensor,
                   last_reject: Tensor, tab: RosenbrockTableau) -> Tensor:
    """Hairer's RODAS step-size rule (Solving ODEs II, IV.8): ``h * clamp(0.9 err^(-1/(q+1)),
    0.2, 6)``, no growth right after a rejection, and a step that landed on a stop keeps the
    size it had before it was cut short (``h_free``)."""
    fac = (_SAFETY * err.clamp(min=1e-10) ** (-1.0 / (tab.error_order + 1)))
    fac = fac.clamp(_FAC_MIN, _FAC_MAX)
    fac = torch.where(accept & last_reject, fac.clamp(max=1.0), fac)
    h_new = h * fac
    return torch.where(accept & hit, torch.maximum(h_new, h_free), h_new)


def advance(accept: Tensor, hit: Tensor, t: Tensor, h: Tensor, stop: Tensor, x: Tensor,
            x1: Tensor, s: Tensor, s1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Time, state and sensitivities after the step: the new ones where it was accepted
    (landing exactly on the stop it was cut to), the old ones elsewhere."""
    t = torch.where(accept, torch.where(hit, stop, t + h), t)
    return (t, torch.where(accept[:, None], x1, x),
            torch.where(accept[:, None, None], s1, s))


__all__ = [
    "TABLEAUS",
    "SensitivityField",
    "SensitivityModel",
    "SensitivityResult",
    "advance",
    "next_step_size",
    "small_matmul",
]
