"""Pendulums: the damped, driven simple pendulum and the double pendulum.

Simple pendulum (point mass on a massless rod of length L; e.g. Baker & Gollub, *Chaotic
Dynamics: An Introduction*, 2nd ed. 1996, ch. 3)::

    dtheta/dt = omega
    domega/dt = -(g/L) sin(theta) - b omega + A cos(Omega t)

Double pendulum (two point masses on massless rods, angles from the downward vertical;
Lagrange's equations solved for the angular accelerations, as in e.g. Shinbrot et al.,
"Chaotic motion of a double pendulum", Am. J. Phys. 60 (1992) 491).

Only the ratio g/L is identifiable from angles of a simple pendulum, so ``g`` is declared
fixed (known) and ``length`` free; likewise only m2/m1 matters for the double pendulum, so
``m1`` is fixed as the reference mass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from physode.model.parameter import Parameter
from physode.model.system import StateVar, System
from systems import register

STANDARD_GRAVITY = 9.80665  # m/s^2, CGPM 1901


@register("pendulum", "simple pendulum with length, g, linear damping and a periodic drive")
class Pendulum(System):
    """Damped, driven simple pendulum; theta(0) = 1 rad at rest, t in [0, 10] s.

    Energy per unit mass, ``L^2 omega^2 / 2 + g L (1 - cos theta)``, is an invariant when
    undamped and undriven (the defaults); :meth:`energy` gives it in every case.
    """

    length = Parameter(1.0, positive=True, units="m", description="rod length L")
    g = Parameter(
        STANDARD_GRAVITY,
        positive=True,
        fixed=True,
        units="m/s^2",
        description="gravitational acceleration",
    )
    damping = Parameter(0.0, units="1/s", description="linear damping rate b")
    drive_amplitude = Parameter(0.0, fixed=True, units="rad/s^2", description="drive amplitude A")
    drive_frequency = Parameter(
        2.0 / 3.0,
        positive=True,
        fixed=True,
        units="rad/s",
        description="drive angular frequency Omega",
    )

    state_vars = (
        StateVar("theta", units="rad", description="angle from the downward vertical"),
        StateVar("omega", units="rad/s", description="angular velocity"),
    )
    time_units = "s"

    def __init__(self, **overrides: Any) -> None:
        super().__init__()
        self.set_initial_state({"theta": 1.0, "omega": 0.0})
        self.t_span = (0.0, 10.0)
        if overrides:
            self.configure(**overrides)

    @property
    def position_velocity_split(self) -> tuple[str, str] | None:  # type: ignore[override]
        """("theta", "omega") when undamped (the acceleration then depends on theta and t only)."""
        return ("theta", "omega") if self._is_zero("damping") else None

    def _is_zero(self, name: str) -> bool:
        return bool((self.param(name).detach() == 0).all())

    def vector_field(self, t: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        theta, omega = state["theta"], state["omega"]
        acc = -(self.g / self.length) * torch.sin(theta) - self.damping * omega
        acc = acc + self.drive_amplitude * torch.cos(self.drive_frequency * t)
        return {"theta": omega, "omega": acc}

    def energy(self, y: Tensor | Mapping[str, Tensor]) -> Tensor:
        """Mechanical energy per unit mass (J/kg)."""
        s = self.unpack(y)
        L = self.length
        return 0.5 * (L * s["omega"]) ** 2 + self.g * L * (1.0 - torch.cos(s["theta"]))

    def invariants(self, y: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
        if self._is_zero("damping") and self._is_zero("drive_amplitude"):
            return {"energy": self.energy(y)}
        return {}


@register("double-pendulum", "planar double pendulum of two point masses (m1, m2, L1, L2, g)")
class DoublePendulum(System):
    """Double pendulum; theta = (theta1, theta2) from the vertical, released at rest from
    (pi/2, pi/2) — a chaotic regime — t in [0, 10] s. Energy is its invariant."""

    m1 = Parameter(1.0, positive=True, fixed=True, units="kg", description="upper mass (reference)")
    m2 = Parameter(1.0, positive=True, units="kg", description="lower mass")
    L1 = Parameter(1.0, positive=True, units="m", description="upper rod length")
    L2 = Parameter(1.0, positive=True, units="m", description="lower rod length")
    g = Parameter(
        STANDARD_GRAVITY,
        positive=True,
        fixed=True,
        units="m/s^2",
        description="gravitational acceleration",
    )

    state_vars = (
        StateVar(
            "theta", (2,), ("link",), {"link": (1, 2)}, "rad", "angles from the downward vertical"
        ),
        StateVar("omega", (2,), ("link",), {"link": (1, 2)}, "rad/s", "angular velocities"),
    )
    time_units = "s"

    def __init__(self, **overrides: Any) -> None:
        super().__init__()
        half_pi = torch.pi / 2
        self.set_initial_state({"theta": [half_pi, half_pi], "omega": [0.0, 0.0]})
        self.t_span = (0.0, 10.0)
        if overrides:
            self.configure(**overrides)

    def vector_field(self, t: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        th, om = state["theta"], state["omega"]
        t1, t2 = th[..., 0], th[..., 1]
        w1, w2 = om[..., 0], om[..., 1]
        m1, m2, L1, L2, g = self.m1, self.m2, self.L1, self.L2, self.g
        d = t1 - t2
        sd, cd = torch.sin(d), torch.cos(d)
        den = 2 * m1 + m2 - m2 * torch.cos(2 * d)
        a1 = (
            -g * (2 * m1 + m2) * torch.sin(t1)
            - m2 * g * torch.sin(t1 - 2 * t2)
            - 2 * sd * m2 * (w2 * w2 * L2 + w1 * w1 * L1 * cd)
        ) / (L1 * den)
        a2 = (
            2
            * sd
            * (w1 * w1 * L1 * (m1 + m2) + g * (m1 + m2) * torch.cos(t1) + w2 * w2 * L2 * m2 * cd)
        ) / (L2 * den)
        return {"theta": om, "omega": torch.stack((a1, a2), dim=-1)}

    def energy(self, y: Tensor | Mapping[str, Tensor]) -> Tensor:
        """Total mechanical energy (J), zero potential at the pivot's height."""
        s = self.unpack(y)
        t1, t2 = s["theta"][..., 0], s["theta"][..., 1]
        w1, w2 = s["omega"][..., 0], s["omega"][..., 1]
        m1, m2, L1, L2, g = self.m1, self.m2, self.L1, self.L2, self.g
        kinetic = (
            0.5 * (m1 + m2) * (L1 * w1) ** 2
            + 0.5 * m2 * (L2 * w2) ** 2
            + m2 * L1 * L2 * w1 * w2 * torch.cos(t1 - t2)
        )
        potential = -(m1 + m2) * g * L1 * torch.cos(t1) - m2 * g * L2 * torch.cos(t2)
        return kinetic + potential

    def invariants(self, y: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"energy": self.energy(y)}


__all__ = ["DoublePendulum", "Pendulum", "STANDARD_GRAVITY"]
