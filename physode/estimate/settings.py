"""The settings of a fit, checked once: solver, optimiser, tolerances, starts, outputs.

:func:`fit_settings` turns the keyword arguments of :func:`physode.fit` into a frozen
:class:`FitSettings` or raises :class:`~physode.errors.InvalidArgument` naming the argument.
Method and gradient names are checked by the engine's own registries
(:func:`physode.ode.methods.get_method`, :func:`physode.ode.gradients.check_gradient`), so
there is one list of each. The same object is the ``settings`` part of a
:class:`~physode.estimate.result.FitResult`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from physode.errors import InvalidArgument
from physode.ode.gradients import check_gradient
from physode.ode.methods import get_method

#: "auto" is resolved by :func:`physode.estimate.choice.choose_optimizer` once the problem
#: is known (LM or L-BFGS); the settings of a finished fit name the optimiser that ran.
OPTIMIZERS = ("auto", "lbfgs", "adam", "lm")
DEFAULT_MAX_ITER = {"auto": 200, "lbfgs": 200, "adam": 500, "lm": 100}
DEFAULT_LR = {"auto": 1.0, "lbfgs": 1.0, "adam": 0.01, "lm": math.nan}
LM_METHODS = ("trf", "lm")
FINE_POINTS = 500


@dataclass(frozen=True)
class SolverSettings:
    """How every model solve of a fit is done (see :func:`physode.solve`)."""

    method: str = "dopri5"
    rtol: float = 1e-8
    atol: float = 1e-10
    gradient: str = "aca"
    options: dict[str, Any] | None = None


@dataclass(frozen=True)
class FitSettings:
    """Every setting of one fit, validated (see :func:`physode.fit` for their meaning)."""

    solver: SolverSettings
    optimizer: str
    max_iter: int
    lr: float
    ftol: float
    xtol: float
    gtol: float
    lm_method: str
    multistart: int
    seed: int
    compile: bool | str
    progress: bool
    fine_points: int
    callback: Callable[[dict[str, Any]], bool | None] | None = None
    #: why this optimiser ran, when ``optimizer="auto"`` chose it (else empty)
    optimizer_reason: str = ""

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the callback: a live hook of the calling process (often a
        lambda), not part of a result; results and worker tasks then pickle."""
        state = dict(self.__dict__)
        state["callback"] = None
        return state

    @property
    def method(self) -> str:
        return self.solver.method

    @property
    def stiff(self) -> bool:
        """Whether the solver method is a stiff (Rosenbrock) one: dearer to compile."""
        return get_method(self.solver.method).stiff

    @property
    def rtol(self) -> float:
        return self.solver.rtol

    @property
    def atol(self) -> float:
        return self.solver.atol

    @property
    def gradient_name(self) -> str:
        """How the optimiser gets derivatives: the gradient mode, or LM's forward
        sensitivities."""
        return "forward sensitivities" if self.optimizer == "lm" else self.solver.gradient


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgument(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise InvalidArgument(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _number(name: str, value: Any, *, positive: bool = False) -> float:
    """A finite float >= 0 (> 0 when ``positive``)."""
    try:
        if isinstance(value, (bool, str)):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidArgument(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        what = "positive and finite" if positive else "finite and >= 0"
        raise InvalidArgument(f"{name} must be {what}, got {value!r}")
    return v


def fit_settings(*, gradient: Any = "aca", method: Any = "dopri5", rtol: Any = 1e-8,
                 atol: Any = 1e-10, optimizer: Any = "auto", max_iter: Any = None,
                 multistart: Any = 0, progress: Any = True, compile: Any = "auto",
                 seed: Any = 0, options: Any = None, lr: Any = None, ftol: Any = 1e-12,
                 xtol: Any = 1e-12, gtol: Any = 1e-12, lm_method: Any = "trf",
                 callback: Any = None, fine_points: Any = FINE_POINTS) -> FitSettings:
    """Check the arguments of :func:`physode.fit`; :class:`InvalidArgument` names the first
    bad one. Tolerances of the solver and its ``options`` are checked by the solver."""
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise InvalidArgument(f"unknown optimizer {optimizer!r}; choose one of "
                              f"{', '.join(OPTIMIZERS)}")
    check_gradient(gradient)
    get_method(method)
    if not (isinstance(compile, bool) or compile == "auto"):
        raise InvalidArgument(f"compile must be True, False or 'auto', got {compile!r}")
    if options is not None and not isinstance(options, dict):
        raise InvalidArgument(f"options must be a dict or None, got {type(options).__name__}")
    if not isinstance(lm_method, str) or lm_method not in LM_METHODS:
        raise InvalidArgument(f"unknown lm_method {lm_method!r}; choose one of "
                              f"{', '.join(LM_METHODS)}")
    if callback is not None and not callable(callback):
        raise InvalidArgument(f"callback must be callable, got {type(callback).__name__}")
    n_iter = DEFAULT_MAX_ITER[optimizer] if max_iter is None else _integer(
        "max_iter", max_iter, 1)
    step = DEFAULT_LR[optimizer] if lr is None or optimizer == "lm" else _number(
        "lr", lr, positive=True)
    ftol, xtol, gtol = _number("ftol", ftol), _number("xtol", xtol), _number("gtol", gtol)
    if optimizer == "lm" and max(ftol, xtol, gtol) < np.finfo(float).eps:
        raise InvalidArgument("ftol, xtol and gtol are all below the machine epsilon: "
                              "Levenberg-Marquardt would have no way to stop but max_iter")
    return FitSettings(
        solver=SolverSettings(method=method, rtol=_number("rtol", rtol, positive=True),
                              atol=_number("atol", atol, positive=True), gradient=gradient,
                              options=options),
        optimizer=optimizer, max_iter=n_iter, lr=step,
        ftol=ftol, xtol=xtol, gtol=gtol,
        lm_method=lm_method, multistart=_integer("multistart", multistart, 0),
        seed=_integer("seed", seed, 0), compile=compile, progress=bool(progress),
        fine_points=_integer("fine_points", fine_points, 2), callback=callback)


__all__ = ["DEFAULT_MAX_ITER", "FINE_POINTS", "OPTIMIZERS", "FitSettings", "SolverSettings",
           "fit_settings"]
