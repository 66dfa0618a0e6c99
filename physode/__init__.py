"""physode: physics-informed ODE modelling with exact, memory-light gradients (ACA)."""

from physode import (
    events,  # physode.events.AtTime / When after `import physode`
    priors,  # physode.priors.Normal / LogNormal / Laplace / Uniform
)
from physode._version import __version__
from physode.data.experiment_parts import InputSeries, NoiseSpec
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
    SteadyStateNotFound,
    StepSizeUnderflow,
    UnknownSystem,
)
from physode.estimate.ensemble import simulate_ensemble
from physode.estimate.executor import WorkerLost, map_tasks, process_pool
from physode.estimate.fit import fit
from physode.estimate.profile_result import ProfileResult
from physode.estimate.profiles import profile
from physode.estimate.result import FitResult
from physode.estimate.sampling import sample
from physode.estimate.synthetic import simulate_experiments
from physode.model.inputs import Input
from physode.model.neural import NeuralTerm
from physode.model.observables import Dose
from physode.model.system import Parameter, StateVar, System
from physode.ode.loop import Stats
from physode.ode.methods import METHODS
from physode.ode.solve import Solution, odeint, solve
from physode.ode.steady import steady_state

__all__ = [
    "__version__",
    "events",
    "priors",
    "Dose",
    "InputSeries",
    "NoiseSpec",
    "simulate_experiments",
    "METHODS",
    "Experiment",
    "FitResult",
    "Input",
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
    "ProfileResult",
    "Solution",
    "SolverError",
    "Stats",
    "StateVar",
    "SteadyStateNotFound",
    "StepSizeUnderflow",
    "System",
    "UnknownSystem",
    "fit",
    "load_observations",
    "odeint",
    "profile",
    "read_netcdf",
    "sample",
    "save_observations",
    "simulate",
    "simulate_ensemble",
    "map_tasks",
    "process_pool",
    "WorkerLost",
    "solve",
    "steady_state",
    "to_xarray",
    "write_netcdf",
]


def __getattr__(name: str) -> object:
    """``physode.petab`` on first use: it imports the ``petab`` library (seconds), which a
    plain ``import physode`` should not pay for."""
    if name == "petab":
        import importlib

        return importlib.import_module("physode.petab")
    raise AttributeError(f"module 'physode' has no attribute {name!r}")
