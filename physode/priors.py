"""Priors of parameters: ``physode.Parameter(value, prior=physode.priors.Normal(mu, sigma))``.

``Normal``, ``LogNormal``, ``Laplace`` and ``Uniform``, each on the linear, ``log`` or
``log10`` scale; the implementation is :mod:`physode.model.priors`. With priors,
:func:`physode.fit` maximises the posterior and its report says so.
"""

from physode.model.priors import Laplace, LogNormal, Normal, Prior, Uniform

__all__ = ["Laplace", "LogNormal", "Normal", "Prior", "Uniform"]
