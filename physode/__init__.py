"""physode: physics-informed ODE modelling with exact, memory-light gradients (ACA)."""

from physode._version import __version__
from physode.data.hdf5 import load_observations, save_observations
from physode.data.labelled import read_netcdf, to_xarray, write_netcdf
from physode.data.observations import Experiment, Observations
from physode.data.simulate import simulate
from physode.errors import (
    InvalidArgument,
    InvalidObservations,
    InvalidSystem,
    MaxStepsExceeded,
    NonFiniteState,
    PhysodeError,
    ReactionParseError,
    SolverError,
    StepSizeUnderflow,
    UnknownSystem,
)
from physode.estimate.fit import fit
from physode.estimate.result import FitResult
from physode.model.neural import NeuralTerm
from physode.model.system import Parameter, StateVar, System
from physode.ode.loop import Stats
from physode.ode.methods import METHODS
from physode.ode.solve import Solution, odeint, solve

__all__ = [
    "__version__",
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
