"""Symplectic integrators ``leapfrog`` and ``yoshida4``, for position-velocity split states.

``leapfrog`` is velocity Verlet (order 2), ``yoshida4`` Yoshida's triple jump (order 4).

Both are fixed-step (``options={"step_size": h}``) kick–drift–kick compositions for

    dq/dt = D(t, v),        dv/dt = A(t, q),

i.e. the position derivative depends on the velocities only (``K2 v`` in nondimensional
N-body units, not necessarily ``v``) and the acceleration on the positions only. A *kick*
advances v with the velocity part of ``func`` at the current positions; a *drift* advances
q with the position part of ``func`` at the current velocities. For a Hamiltonian
``T(v) + V(q)`` the flow map is symplectic: the energy error stays bounded over
exponentially long times instead of drifting (Hairer, Lubich & Wanner, Geometric Numerical
Integration, 2nd ed. 2006, I.3 and IX.8).

Declaring the split. ``func`` (or the object a bound-method ``func`` belongs to) has an
attribute ``position_velocity_split``, either

- ``(position_name, velocity_name)``: names of two state variables of a
  :class:`physode.System` (as ``systems.NBody`` and an undamped ``systems.Pendulum`` declare),
- an int ``n``: the first ``n`` entries of the last axis are positions, the rest velocities
  (e.g. ``f.position_velocity_split = 6`` on a plain function), or
- a pair of slices of the last axis.

Any leading dimensions are batch dimensions.

The step is a pure function of ``(t, h, y0, f0)``, so ACA rebuilds it exactly. ``f0`` is
only read for its velocity part ``A(t, q0)``, and the derivative a step hands on (``f1``)
is ``func`` at ``(t1, q1, v*)`` with ``v*`` the velocity before the last half kick: its
velocity part is exactly ``A(t1, q1)``, which is all the next step reads, so each stage
costs two evaluations (one drift, one kick) and the first kick of a step is free.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from physode.errors import InvalidArgument
from physode.ode.methods.base import Method
from physode.ode.methods.dense import PolyDense
from physode.ode.methods.step import Step, Time, VectorField, declaration, time_tensor
from physode.ode.methods.tableau import hermite_terms, nested_dense

_HOW = ("declare it as func.position_velocity_split = n_positions (the first n entries of "
        "the last axis are positions, the rest velocities), or use a physode.System that "
        "declares position_velocity_split (e.g. NBody, an undamped Pendulum)")


def _spec(func: VectorField) -> Any:
    """The user's declaration ``position_velocity_split`` on ``func`` or its owner."""
    return declaration(func, "position_velocity_split", bound_owner=True)


def _owner(func: VectorField) -> Any:
    """The object whose ``state_slice`` names state variables: ``func`` or its owner."""
    if declaration(func, "state_slice") is not None:
        return func
    return getattr(func, "__self__", None)


def resolve_split(func: VectorField, y: torch.Tensor, method: str) -> tuple[slice, slice]:
    """The (positions, velocities) slices of the last axis of ``y`` that ``func`` declares."""
    spec = _spec(func)
    size = y.shape[-1] if y.ndim else 0
    if spec is None:
        raise InvalidArgument(
            f"method {method!r} is symplectic and needs the state split into positions and "
            f"velocities, but func declares no position_velocity_split; {_HOW}")
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        n = int(spec)
        pos, vel = slice(0, n), slice(n, size)
    elif (isinstance(spec, (tuple, list)) and len(spec) == 2
          and all(isinstance(s, str) for s in spec)):
        owner = _owner(func)
        if owner is None:
            raise InvalidArgument(
                f"position_velocity_split {tuple(spec)!r} names state variables, but func "
                "has no state_slice() to look them up (it is not a physode.System); "
                f"{_HOW}")
        pos, vel = owner.state_slice(spec[0]), owner.state_slice(spec[1])
    elif (isinstance(spec, (tuple, list)) and len(spec) == 2
          and all(isinstance(s, slice) for s in spec)):
        pos, vel = spec
    else:
        raise InvalidArgument(f"position_velocity_split must be an int, two state names or "
                              f"two slices, got {spec!r}")
    ip = set(range(size)[pos])
    iv = set(range(size)[vel])
    if not ip or not iv or ip & iv or len(ip) + len(iv) != size:
        raise InvalidArgument(
            f"position_velocity_split {spec!r} must split the last axis of the state "
            f"(length {size}) into two non-empty, disjoint parts that cover it")
    return pos, vel


def _join(q: torch.Tensor, v: torch.Tensor, pos: slice, vel: slice, size: int) -> torch.Tensor:
    """The state with positions ``q`` and velocities ``v`` (any leading dims)."""
    p0 = range(size)[pos]
    v0 = range(size)[vel]
    if p0.step == 1 and v0.step == 1:
        if p0.start == 0 and p0.stop == v0.start:
            return torch.cat([q, v], dim=-1)
        if v0.start == 0 and v0.stop == p0.start:
            return torch.cat([v, q], dim=-1)
    out = torch.cat([q, v], dim=-1)
    index = torch.tensor([*p0, *v0], device=q.device)
    return out.index_select(-1, torch.argsort(index))


# cubic Hermite over [f(t, y0), f(t+h, y1), (y1 - y0)/h] (Hairer, Nørsett & Wanner I, II.6):
# the mean slope carries weight b = 1, f0 is vector 0 and f1 vector 1
_HERMITE = nested_dense(hermite_terms([0.0, 0.0, 1.0], 3, 1))


class Symplectic(Method):
    """A kick–drift–kick composition: kick ``b[0]``, then for each stage i a drift ``a[i]``
    followed by a kick ``b[i+1]`` (weights in units of h)."""

    fsal = True
    dense_order = 3
    linear_dense = True
    # the continuous adjoint integrates an augmented state that has no position/velocity
    # split, so it cannot run a symplectic method; ACA and direct can
    supports_adjoint = False
    nfe_dense = 2
    n_extended = 3

    def __init__(self, name: str, a: tuple[float, ...], b: tuple[float, ...], order: int,
                 citation: str) -> None:
        if len(b) != len(a) + 1 or abs(sum(a) - 1.0) > 1e-12 or abs(sum(b) - 1.0) > 1e-12:
            raise InvalidArgument(f"symplectic method {name!r}: needs len(b) = len(a) + 1 "
                                  "and drift and kick weights each summing to 1")
        self.name = name
        self.a = a
        self.b = b
        self.order = order
        self.citation = citation
        self.nfe_per_step = 2 * len(a)
        self.interpolant = PolyDense(_HERMITE, by_h=True)

    def step(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
             f0: torch.Tensor) -> Step:
        h = float(h)  # symplectic steps run eagerly (not functional: they read the split)
        pos, vel = resolve_split(func, y0, self.name)
        size = y0.shape[-1]
        q, v = y0[..., pos], y0[..., vel]
        v = torch.add(v, f0[..., vel], alpha=self.b[0] * h)
        s = len(self.a)
        node = 0.0  # fraction of the step the drifts have covered
        g = f0
        for i, (ai, bi) in enumerate(zip(self.a, self.b[1:])):
            g = func(time_tensor(t + (node + 0.5 * ai) * h, y0), _join(q, v, pos, vel, size))
            q = torch.add(q, g[..., pos], alpha=ai * h)
            node = 1.0 if i == s - 1 else node + ai
            g = func(time_tensor(t + node * h, y0), _join(q, v, pos, vel, size))
            v = torch.add(v, g[..., vel], alpha=bi * h)
        y1 = _join(q, v, pos, vel, size)
        return Step(y1, None, None, [g, y1])

    def f1(self, func: VectorField, t1: Time, step: Step) -> torch.Tensor | None:
        return step.ks[0]

    def extended_stages(self, func: VectorField, t: Time, h: Time, y0: torch.Tensor,
                        ks: list[torch.Tensor], f1: torch.Tensor) -> list[torch.Tensor]:
        """The true derivatives at both ends and the mean slope (``f1`` carries a stale
        position part, so both ends are evaluated afresh: ``nfe_dense = 2``)."""
        y1 = ks[1]
        return [func(time_tensor(t, y0), y0), func(time_tensor(t + h, y0), y1),
                (y1 - y0) / h]


def _yoshida4() -> Symplectic:
    cbrt2 = 2.0 ** (1.0 / 3.0)
    w1 = 1.0 / (2.0 - cbrt2)
    w0 = -cbrt2 / (2.0 - cbrt2)
    return Symplectic(
        name="yoshida4", a=(w1, w0, w1), b=(w1 / 2, (w1 + w0) / 2, (w0 + w1) / 2, w1 / 2),
        order=4,
        citation="H. Yoshida, 'Construction of higher order symplectic integrators', Phys. "
                 "Lett. A 150 (1990) 262-268: the triple jump w1, w0, w1 with w1 = 1/(2 - "
                 "2^(1/3)), w0 = -2^(1/3)/(2 - 2^(1/3)) of velocity Verlet steps; Hairer, "
                 "Lubich & Wanner, Geometric Numerical Integration, II.4.")


LEAPFROG = Symplectic(
    name="leapfrog", a=(1.0,), b=(0.5, 0.5), order=2,
    citation="Velocity Verlet / Stormer-Verlet (Verlet 1967; Swope, Andersen, Berens & "
             "Wilson, J. Chem. Phys. 76 (1982) 637-649); Hairer, Lubich & Wanner, Geometric "
             "Numerical Integration, 2nd ed. (2006), I.3.1.")
YOSHIDA4 = _yoshida4()

SYMPLECTIC_METHODS: dict[str, Method] = {m.name: m for m in (LEAPFROG, YOSHIDA4)}
