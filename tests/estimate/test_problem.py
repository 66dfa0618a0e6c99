"""FitProblem: the estimator's only road to the solver; it neither re-validates the data
nor changes the system behind the caller's back (issue 11)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import physode
from physode import Parameter, StateVar, System
from physode.data.observations import Observations
from physode.errors import InvalidArgument
from physode.estimate.problem import FitProblem, prepare_initial_states
from physode.estimate.settings import SolverSettings

ESTIMATE = Path(physode.__file__).parent / "estimate"


class Decay(System):
    k = Parameter(1.0, positive=True)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 1.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": -self.k * s["y"]}


@pytest.fixture()
def two_experiments():
    return physode.simulate(Decay(k=1.3), np.linspace(0, 2, 9), y0=[[1.0], [2.0]], seed=0)


def test_problem_does_not_validate_again(two_experiments, monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("validated twice")

    monkeypatch.setattr(Observations, "validate", boom)
    problem = FitProblem(Decay(), two_experiments, SolverSettings(rtol=1e-9, atol=1e-11))
    assert problem.n_data == 18


def test_problem_leaves_the_system_alone(two_experiments):
    system = Decay()
    system.set_initial_state({"y": 1.5}, unknown=True)
    before = {k: v.clone() for k, v in system.state_dict().items()}
    with pytest.raises(InvalidArgument, match="prepare_initial_states"):
        FitProblem(system, two_experiments)
    after = system.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    prepare_initial_states(system, two_experiments)  # the explicit, documented change
    assert tuple(system.y0.shape) == (2, 1)
    problem = FitProblem(system, two_experiments)
    assert problem.initial_states().shape == (2, 1)
    assert system.free_labels() == ["k", "y0.y[0]", "y0.y[1]"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("module", ["report", "plots", "parts", "uncertainty", "settings"])
def test_presentation_never_imports_the_result_class(module):
    assert not any(n.startswith("physode.estimate.result") for n in
                   _imports(ESTIMATE / f"{module}.py"))


def test_fit_reaches_the_solver_only_through_the_problem():
    names = _imports(ESTIMATE / "fit.py")
    assert not any(n.startswith("physode.ode") for n in names), names


def test_estimator_reads_no_private_model_attributes():
    for path in ESTIMATE.glob("*.py"):
        text = path.read_text()
        for private in ("._y0_free", "._specs", "._raw", "._fixed"):
            assert f"system{private}" not in text, (path.name, private)
