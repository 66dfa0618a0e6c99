"""Events for :func:`physode.odeint` and :func:`physode.solve`: ``AtTime`` and ``When``.

``from physode.events import AtTime, When``; the implementation is
:mod:`physode.ode.events` (the objects) and :mod:`physode.ode.segments` (the restarts and
the gradients through them).
"""

from physode.ode.events import AtTime, Event, EventRecord, When

__all__ = ["AtTime", "Event", "EventRecord", "When"]
