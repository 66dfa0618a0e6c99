"""physode: physics-informed ODE modelling with exact, memory-light gradients (ACA)."""

from .api import Solution, odeint, solve
from .errors import (
    InvalidArgument,
    MaxStepsExceeded,
    NonFiniteState,
    PhysodeError,
    SolverError,
    StepSizeUnderflow,
)
from .integrate import Stats
from .solvers import METHODS

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "InvalidArgument",
    "MaxStepsExceeded",
    "NonFiniteState",
    "PhysodeError",
    "Solution",
    "SolverError",
    "Stats",
    "StepSizeUnderflow",
    "odeint",
    "solve",
]
