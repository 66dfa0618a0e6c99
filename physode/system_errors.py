"""Errors raised while defining, configuring or looking up a :class:`physode.System`.

They derive from :class:`physode.errors.PhysodeError` (so the command line prints them as
one line and exits with status 2) and from :class:`ValueError` (so code that already
catches bad values keeps working). Every message names the culprit: the parameter, the
state variable, the reaction and the position in it, or the system name.
"""

from __future__ import annotations

from .errors import PhysodeError


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


__all__ = ["InvalidSystem", "ReactionParseError", "UnknownSystem"]
