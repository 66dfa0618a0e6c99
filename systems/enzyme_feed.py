"""Enzyme kinetics with a substrate feed given as data: a forced (non-autonomous) system.

Substrate S is pumped into a reactor at a time-varying rate ``u(t)`` (the experiment's
input series ``"feed"``, e.g. a measured pump log) and converted to product P by an enzyme
with Michaelis-Menten kinetics (Michaelis & Menten, Biochem. Z. 49:333, 1913; Cornish-
Bowden, *Fundamentals of Enzyme Kinetics*, 4th ed., 2012, ch. 2)::

    dS/dt = u(t) - Vmax S / (Km + S),        dP/dt = Vmax S / (Km + S).

The feed is read in the vector field as ``self.input("feed", t)``; the solver steps onto
the knots of the series, where a piecewise-constant or linear feed has its kinks.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from physode.model.system import Parameter, StateVar, System
from systems import register


@register("enzyme-feed", "Michaelis-Menten conversion of a substrate fed at a rate u(t) (data)")
class EnzymeFeed(System):
    """Fed-batch Michaelis-Menten reactor; concentrations in mM, time in min."""

    Vmax = Parameter(1.0, positive=True, units="mM/min", description="maximal rate")
    Km = Parameter(2.0, positive=True, units="mM", description="Michaelis constant")
    state_vars = (StateVar("S", units="mM", description="substrate"),
                  StateVar("P", units="mM", description="product"))
    input_names = ("feed",)
    time_units = "min"

    def __init__(self, **overrides: Any) -> None:
        super().__init__()
        self.set_initial_state({"S": 0.0, "P": 0.0})
        self.t_span = (0.0, 60.0)
        self.configure(**overrides)

    def vector_field(self, t: Tensor, s: dict[str, Tensor]) -> dict[str, Tensor]:
        rate = self.Vmax * s["S"] / (self.Km + s["S"])
        return {"S": self.input("feed", t) - rate, "P": rate}
