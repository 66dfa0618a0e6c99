"""physode: physics-informed ODE modelling with exact, memory-light gradients (ACA)."""

from .api import Solution, odeint, solve
from .errors import (
    InvalidArgument,
    InvalidObservations,
    MaxStepsExceeded,
    NonFiniteState,
    PhysodeError,
    SolverError,
    StepSizeUnderflow,
)
from .fit import fit
from .fit_result import FitResult
from .integrate import Stats
from .neural import NeuralTerm
from .observations import Experiment, Observations, load_observations, save_observations
from .results import read_netcdf, to_xarray, write_netcdf
from .simulate import simulate
from .solvers import METHODS
from .system import Parameter, StateVar, System
from .system_errors import InvalidSystem, ReactionParseError, UnknownSystem

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "Experiment",
    "FitResult",
    "InvalidArgument",
    "InvalidObservations",
    "InvalidSystem",
    "MaxStepsExceeded",
    "NeuralTerm",
    "NonFiniteState",
    "Observations",
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
    "fit",
    "load_observations",
    "odeint",
    "read_netcdf",
    "save_observations",
    "simulate",
    "solve",
    "to_xarray",
    "write_netcdf",
]
