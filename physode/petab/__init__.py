"""PEtab problems and SBML models in, simulation tables out: ``physode.petab.load(yaml)``.

See :mod:`physode.petab.problem` (the problem), :mod:`physode.petab.sbml` and
:mod:`physode.petab.codegen` (SBML to generated torch code, cached by
:mod:`physode.petab.cache`), :mod:`physode.petab.objective` (the likelihood) and
:mod:`physode.petab.fitting` (multistart fits).
"""

from physode.petab.problem import PetabProblem, load
from physode.petab.simulate import SolverOptions

__all__ = ["PetabProblem", "SolverOptions", "load"]
