"""physode's own exceptions.

Every error a user can provoke is one of these, and its message names what is wrong and
where (time, step size, parameter, file, ...), so that the command line can print it as one
line and exit with status 2 instead of a traceback.
"""

from __future__ import annotations


class PhysodeError(Exception):
    """Base class of every error physode raises on purpose."""


class InvalidArgument(PhysodeError, ValueError):
    """An argument of a public function is malformed (shape, dtype, value, name)."""


class SolverError(PhysodeError, RuntimeError):
    """The integration itself failed; carries the time ``t`` where it stopped."""

    def __init__(self, message: str, t: float) -> None:
        super().__init__(message)
        self.t = t


class StepSizeUnderflow(SolverError):
    """The adaptive step size became too small to make progress in floating point."""

    def __init__(self, t: float, h: float, hint: str = "") -> None:
        msg = (
            f"step size underflow at t={t:.17g}: h={h:.3g} is below the floating-point "
            "resolution of t; the problem may be stiff or singular there, or the tolerances "
            "too tight for the dtype"
        )
        super().__init__(msg + (f". {hint}" if hint else ""), t)
        self.h = h


class MaxStepsExceeded(SolverError):
    """More than ``max_steps`` steps (accepted and rejected) were attempted."""

    def __init__(self, t: float, steps: int, hint: str = "") -> None:
        msg = (
            f"maximum number of steps ({steps}) exceeded at t={t:.17g}; raise "
            "options['max_steps'] or loosen the tolerances"
        )
        super().__init__(msg + (f". {hint}" if hint else ""), t)
        self.steps = steps


class NonFiniteState(SolverError):
    """The state or its derivative became NaN or infinite."""

    def __init__(self, t: float, what: str = "state") -> None:
        super().__init__(f"non-finite {what} (NaN or inf) at t={t:.17g}", t)


class SteadyStateNotFound(SolverError):
    """Neither Newton's method nor integrating to a long time found a state with f(y) = 0;
    ``t`` is the time the integration reached, ``residual`` the smallest ``max |f(y)|`` seen."""

    def __init__(self, message: str, t: float, residual: float) -> None:
        super().__init__(message, t)
        self.residual = residual


class InvalidObservations(PhysodeError, ValueError):
    """An observations file or :class:`~physode.data.observations.Observations` object violates
    the schema; the message names the file, the group and the dataset concerned."""

class InvalidSystem(PhysodeError, ValueError):
    """A system, a parameter declaration, a state declaration or an override is invalid."""


class UnknownSystem(InvalidSystem):
    """A registry name or ``"module:Class"`` reference does not resolve to a System."""


class ReactionParseError(InvalidSystem):
    """A reaction string does not parse; ``text`` and ``position`` (0-based) locate it.

    The message shows the reaction with a caret under the offending character, e.g.::

        cannot parse reaction 'A + -> B' at position 4: expected a species name
          A + -> B
              ^
    """

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text = text
        self.position = position
        self.reason = reason
        caret = " " * (2 + position) + "^"
        super().__init__(
            f"cannot parse reaction {text!r} at position {position}: {reason}\n  {text}\n{caret}"
        )
