"""Newtonian N-body gravity, vectorised over all pairs, with three classic presets.

Equations of motion (optionally Plummer-softened, Aarseth, *Gravitational N-Body
Simulations*, 2003, sec. 2.1)::

    dr_i/dt = K2 v_i
    dv_i/dt = G sum_{j != i} m_j (r_j - r_i) / (|r_j - r_i|^2 + eps^2)^(3/2)

``K2`` (``velocity_scale``) is 1 in consistent units; nondimensionalised setups such as the
seed paper's use K2 != 1. The conserved quantities are the energy
``E = K2/2 sum m_i |v_i|^2 - G sum_{i<j} m_i m_j / sqrt(|r_ij|^2 + eps^2)``, the linear
momentum ``sum m_i v_i`` and the angular momentum ``sum m_i r_i x v_i``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from physode.errors import InvalidSystem
from physode.model.parameter import Parameter, as_float64_tensor
from physode.model.system import StateVar, System
from systems import register

_AXES = ("x", "y", "z")


class NBody(System):
    """N point masses under Newtonian gravity in 2 or 3 dimensions.

    Args:
        masses: one mass per body (a positive parameter, fitted by default), or a
            :class:`Parameter` declaration of shape ``(n,)``.
        position, velocity: initial positions and velocities, shape ``(n, dim)``; the
            velocity defaults to rest. Without ``position`` give ``dim`` and no ``y0`` is set.
        G: gravitational constant (fixed by default; pass a Parameter to fit it).
        softening: Plummer softening length eps (fixed, >= 0).
        velocity_scale: K2 in dr/dt = K2 v (fixed).
        body_names: coordinate labels of the body dimension (default 0..n-1).
        *_units: unit strings for reports and files.
        **overrides: applied with :meth:`~physode.System.configure`.
    """

    position_velocity_split = ("position", "velocity")

    def __init__(
        self,
        masses: Sequence[float] | Tensor | Parameter,
        position: Sequence[Sequence[float]] | Tensor | None = None,
        velocity: Sequence[Sequence[float]] | Tensor | None = None,
        *,
        dim: int | None = None,
        G: float | Parameter = 1.0,
        softening: float | Parameter = 0.0,
        velocity_scale: float | Parameter = 1.0,
        body_names: Sequence[Any] | None = None,
        length_units: str | None = None,
        velocity_units: str | None = None,
        mass_units: str | None = None,
        time_units: str | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        mass_spec = (
            masses
            if isinstance(masses, Parameter)
            else Parameter(
                masses,
                positive=True,
                units=mass_units,
                description="mass of each body",
                name="masses",
            )
        )
        if mass_spec.value.dim() != 1 or mass_spec.value.numel() < 2:
            raise InvalidSystem(
                f"NBody: masses must be a vector of >= 2 values, got shape {mass_spec.shape}"
            )
        n = mass_spec.value.numel()
        if position is not None:
            pos = as_float64_tensor(position, "NBody position")
            if pos.dim() != 2 or pos.shape[0] != n or pos.shape[1] not in (2, 3):
                raise InvalidSystem(
                    f"NBody: position must have shape ({n}, 2) or ({n}, 3) for {n} masses, "
                    f"got {tuple(pos.shape)}"
                )
            if dim is not None and dim != pos.shape[1]:
                raise InvalidSystem(
                    f"NBody: dim={dim} but positions are {pos.shape[1]}-dimensional"
                )
            dim = pos.shape[1]
        elif velocity is not None:
            raise InvalidSystem("NBody: velocity given without position")
        if dim not in (2, 3):
            raise InvalidSystem(f"NBody: dim must be 2 or 3, got {dim!r}")
        names = tuple(range(n)) if body_names is None else tuple(body_names)
        if len(names) != n:
            raise InvalidSystem(f"NBody: {len(names)} body names for {n} bodies")
        self.n_bodies, self.dim = n, dim
        self.time_units = time_units
        coords = {"body": names, "axis": _AXES[:dim]}
        self.state_vars = (
            StateVar(
                "position",
                (n, dim),
                ("body", "axis"),
                coords,
                length_units,
                "position of each body",
            ),
            StateVar(
                "velocity",
                (n, dim),
                ("body", "axis"),
                coords,
                velocity_units,
                "velocity of each body",
            ),
        )
        self.add_parameter("masses", mass_spec)
        self.add_parameter("G", _fixed(G, "G", positive=True, description="gravitational constant"))
        self.add_parameter(
            "softening",
            _fixed(
                softening,
                "softening",
                bounds=(0.0, math.inf),
                description="Plummer softening length",
            ),
        )
        self.add_parameter(
            "velocity_scale",
            _fixed(
                velocity_scale, "velocity_scale", positive=True, description="K2 in dr/dt = K2 v"
            ),
        )
        if position is not None:
            vel = (
                torch.zeros_like(pos)
                if velocity is None
                else as_float64_tensor(velocity, "NBody velocity")
            )
            if vel.shape != pos.shape:
                raise InvalidSystem(
                    f"NBody: velocity shape {tuple(vel.shape)} != position shape {tuple(pos.shape)}"
                )
            self.set_initial_state({"position": pos, "velocity": vel})
        if overrides:
            self.configure(**overrides)

    # ------------------------------------------------------------------ dynamics
    def _pair_terms(self, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """diff[..., i, j, :] = r_j - r_i, and 1/d_ij, 1/d_ij^3 with zero diagonal."""
        n = r.shape[-2]
        diff = r.unsqueeze(-3) - r.unsqueeze(-2)
        eps = self.softening
        eye = torch.eye(n, dtype=r.dtype, device=r.device)
        dist2 = (diff * diff).sum(-1) + eps * eps + eye  # diagonal padded away from 0
        inv = torch.rsqrt(dist2) * (1.0 - eye)
        return diff, inv, inv * inv * inv

    def vector_field(self, t: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        r, v = state["position"], state["velocity"]
        m = self.masses.to(r.dtype)
        diff, _, inv3 = self._pair_terms(r)
        acc = self.G * torch.einsum("...ij,...ijd->...id", inv3 * m, diff)
        return {"position": self.velocity_scale * v, "velocity": acc}

    def invariants(self, y: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Energy, linear momentum ``(*batch, dim)`` and angular momentum (``(*batch,)`` in
        2-D, ``(*batch, 3)`` in 3-D)."""
        s = self.unpack(y)
        r, v = s["position"], s["velocity"]
        m = self.masses.to(r.dtype)
        _, inv, _ = self._pair_terms(r)
        kinetic = 0.5 * self.velocity_scale * (m * (v * v).sum(-1)).sum(-1)
        potential = -0.5 * self.G * (m.unsqueeze(-1) * m * inv).sum((-2, -1))
        mv = m.unsqueeze(-1) * v
        if self.dim == 2:
            angular = (r[..., 0] * mv[..., 1] - r[..., 1] * mv[..., 0]).sum(-1)
        else:
            angular = torch.linalg.cross(r, mv, dim=-1).sum(-2)
        return {
            "energy": kinetic + potential,
            "linear_momentum": mv.sum(-2),
            "angular_momentum": angular,
        }


def _fixed(value: float | Parameter, name: str, **kw: Any) -> Parameter:
    return value if isinstance(value, Parameter) else Parameter(value, fixed=True, name=name, **kw)


# ---------------------------------------------------------------------- presets
# Seed paper's nondimensionalisation (Zhuang et al. 2020, three-body experiment, after
# G. Deshmukh, "Modelling the three body problem in classical mechanics using Python",
# Towards Data Science 2019: Alpha Centauri scales).
G_SI = 6.67408e-11  # m^3 kg^-1 s^-2 (CODATA 2014)
M_ND = 1.989e30  # kg, solar mass
R_ND = 5.326e12  # m, Alpha Centauri A-B separation
V_ND = 30000.0  # m/s, Earth's orbital speed
T_ND = 0.51 * 79.91 * 365 * 24 * 3600.0  # s, 0.51 x Alpha Centauri orbital period (79.91 y)
K1 = G_SI * T_ND * M_ND / (R_ND**2 * V_ND)
K2 = V_ND * T_ND / R_ND


@register(
    "three-body-paper",
    "seed paper's nondimensionalised three-body problem (ACA, Zhuang et al. 2020)",
)
def three_body_paper(**overrides: Any) -> NBody:
    """Three bodies, masses (1.1, 1.1, 0.9) in solar masses, 3-D, t in [0, 1] (units of T_ND).

    dv_i/dt = K1 sum_j m_j (r_j - r_i)/|r_j - r_i|^3, dr_i/dt = K2 v_i with
    K1 = G t_nd m_nd / (r_nd^2 v_nd) and K2 = v_nd t_nd / r_nd (module constants).
    """
    system = NBody(
        [1.1, 1.1, 0.9],
        position=[[0.0, 0.2, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 0.5]],
        velocity=[[0.0, 0.1, 0.0], [0.0, 0.0, 0.1], [0.1, 0.0, 0.0]],
        G=K1,
        velocity_scale=K2,
        length_units=f"{R_ND:g} m",
        velocity_units=f"{V_ND:g} m/s",
        mass_units=f"{M_ND:g} kg",
        time_units=f"{T_ND:.11g} s",
    )
    system.t_span = (0.0, 1.0)
    return system.configure(**overrides)


FIGURE_EIGHT_PERIOD = 6.32591398


@register(
    "figure-eight",
    "Chenciner-Montgomery figure-eight choreography of three equal masses (G = m = 1)",
)
def figure_eight(**overrides: Any) -> NBody:
    """The figure-eight three-body orbit, t in [0, T] with period T = 6.32591398.

    Initial conditions of C. Simó as quoted by Chenciner & Montgomery, "A remarkable
    periodic solution of the three-body problem in the case of equal masses", Annals of
    Mathematics 152 (2000) 881-901: r1 = -r2 = (0.97000436, -0.24308753), r3 = 0,
    v3 = (-0.93240737, -0.86473146), v1 = v2 = -v3/2.
    """
    r1 = [0.97000436, -0.24308753]
    v3 = [-0.93240737, -0.86473146]
    system = NBody(
        [1.0, 1.0, 1.0],
        position=[r1, [-r1[0], -r1[1]], [0.0, 0.0]],
        velocity=[[-v3[0] / 2, -v3[1] / 2], [-v3[0] / 2, -v3[1] / 2], v3],
    )
    system.t_span = (0.0, FIGURE_EIGHT_PERIOD)
    return system.configure(**overrides)


@register("pythagorean", "Burrau's Pythagorean three-body problem: masses 3, 4, 5 at rest (G = 1)")
def pythagorean(**overrides: Any) -> NBody:
    """Masses 3, 4, 5 at rest at (1, 3), (-2, -1), (1, -1) — the vertices of a 3-4-5 right
    triangle opposite each mass; G = 1, t in [0, 70].

    C. Burrau, Astronomische Nachrichten 195 (1913) 113; integrated to the final escape
    (t ~ 60-70) by V. Szebehely & C. F. Peters, Astron. J. 72 (1967) 876. Close
    encounters make it a stringent test of adaptive step control.
    """
    system = NBody(
        [3.0, 4.0, 5.0],
        position=[[1.0, 3.0], [-2.0, -1.0], [1.0, -1.0]],
        velocity=[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
    )
    system.t_span = (0.0, 70.0)
    return system.configure(**overrides)


__all__ = ["K1", "K2", "NBody", "figure_eight", "pythagorean", "three_body_paper"]
