"""Pharmacokinetics: the one-compartment model with first-order oral absorption.

The drug is dosed into the gut (amount ``A_g``), absorbed at rate ``ka`` into the central
compartment (amount ``A_c``, volume of distribution ``V``) and eliminated at rate ``ke``;
what is measured is the plasma concentration ``C = A_c / V`` (Gabrielsson & Weiner,
*Pharmacokinetic and Pharmacodynamic Data Analysis*, 5th ed., 2016, sec. 2.3; Rowland &
Tozer, *Clinical Pharmacokinetics and Pharmacodynamics*, 4th ed., ch. 6)::

    dA_g/dt = -ka A_g,        dA_c/dt = ka A_g - ke A_c,        C = A_c / V.

Doses are boluses into the gut at known times (``physode.Dose``), given by the experiment
or, by default, 100 mg every 12 h for two days. With one dose D at t = 0 the closed form
is ``C(t) = D ka / (V (ka - ke)) (exp(-ke t) - exp(-ka t))`` (Bateman function).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from physode.model.observables import Dose
from physode.model.system import Parameter, StateVar, System
from systems import register


@register("pk-oral", "one-compartment pharmacokinetics, oral doses: ka, ke, V; C = A_c / V")
class OneCompartmentOral(System):
    """One-compartment oral-dosing PK model; amounts in mg, time in h, volume in L."""

    ka = Parameter(1.0, positive=True, units="1/h", description="absorption rate constant")
    ke = Parameter(0.2, positive=True, units="1/h", description="elimination rate constant")
    V = Parameter(30.0, positive=True, units="L", description="volume of distribution")
    state_vars = (StateVar("gut", units="mg", description="amount in the gut"),
                  StateVar("central", units="mg", description="amount in the central "
                                                              "compartment"))
    observable_vars = (StateVar("concentration", units="mg/L",
                                description="plasma concentration A_c / V"),)
    time_units = "h"
    default_dosing = tuple(Dose(12.0 * i, 100.0, "gut") for i in range(4))

    def __init__(self, **overrides: Any) -> None:
        super().__init__()
        self.set_initial_state({"gut": 0.0, "central": 0.0})
        self.t_span = (0.0, 48.0)
        self.configure(**overrides)

    def vector_field(self, t: Tensor, s: dict[str, Tensor]) -> dict[str, Tensor]:
        absorbed = self.ka * s["gut"]
        return {"gut": -absorbed, "central": absorbed - self.ke * s["central"]}

    def observables(self, t: Tensor, s: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"concentration": s["central"] / self.V}
