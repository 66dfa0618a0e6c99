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
from .neural import NeuralTerm
from .solvers import METHODS
from .system import Parameter, StateVar, System
from .system_errors import InvalidSystem, ReactionParseError, UnknownSystem

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "InvalidArgument",
    "InvalidSystem",
    "MaxStepsExceeded",
    "NeuralTerm",
    "NonFiniteState",
    "Parameter",
    "ReactionParseError",
    "PhysodeError",
    "Solution",
    "SolverError",
    "Stats",
    "StateVar",
    "StepSizeUnderflow",
    "System",
    "UnknownSystem",
    "odeint",
    "solve",
]
