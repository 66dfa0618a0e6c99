"""SBML reading: unsupported features are refused by name; generated code is right."""

from __future__ import annotations

import pytest
import tiny_problem as tiny
import torch

from physode.errors import InvalidSystem
from physode.petab.cache import load_model
from physode.petab.sbml import read_sbml

_ALGEBRAIC = """<listOfRules><algebraicRule><math xmlns="http://www.w3.org/1998/Math/MathML">
<apply><minus/><ci>A</ci><ci>B</ci></apply></math></algebraicRule></listOfRules>
"""


def test_algebraic_rule_is_refused_by_name(tmp_path):
    path = tmp_path / "alg.xml"
    path.write_text(tiny.SBML_HEAD + _ALGEBRAIC + tiny.SBML_TAIL)
    with pytest.raises(InvalidSystem, match=r"'tiny'.*algebraic rule"):
        read_sbml(path)


def test_mass_action_with_time_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSODE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "tiny.xml"
    path.write_text(tiny.SBML)
    model = read_sbml(path)
    assert model.states == ["A", "B"]
    gen = load_model(path, [])
    assert gen.generated and gen.n_breakpoints == 1
    p = torch.tensor(gen.defaults, dtype=torch.float64)  # c, k, T
    x = torch.tensor([1.0, 0.0], dtype=torch.float64)
    # concentration: d[A]/dt = -(c k A s)/c = -k A s, s = 1 before T and 2 after
    for t, s in ((1.0, 1.0), (4.0, 2.0)):
        f = gen.rhs(torch.tensor(t, dtype=torch.float64), x, p)
        torch.testing.assert_close(f, torch.tensor([-0.5 * s, 0.5 * s], dtype=torch.float64))
    assert [float(b) for b in gen.breakpoints(p)] == [3.0]
    J = gen.jacobian(torch.tensor(1.0, dtype=torch.float64), x, p)
    torch.testing.assert_close(J, torch.tensor([[-0.5, 0.0], [0.5, 0.0]],
                                               dtype=torch.float64))
    again = load_model(path, [])
    assert not again.generated and again.path == gen.path
