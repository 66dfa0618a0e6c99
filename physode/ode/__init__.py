"""The ODE engine: methods, step-size control, gradients; it imports nothing above it.

Entry points: :func:`physode.ode.solve.odeint` and :func:`~physode.ode.solve.solve`. The
methods live in :mod:`physode.ode.methods` (registered by name in ``METHODS``), the
integration loop in :mod:`physode.ode.loop`, step-size controllers in
:mod:`physode.ode.controller`, gradient modes in :mod:`physode.ode.gradients`.
"""
