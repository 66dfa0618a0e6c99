"""Rich displays (issue 19, item 12): System, Observations and FitResult have a readable
``repr`` and an HTML ``_repr_html_`` with the parameters, values, bounds and units."""

from __future__ import annotations

import html.parser

import numpy as np
import pytest

import physode
from physode import Parameter, StateVar, System


class Spring(System):
    """x'' = -(k/m) x - c x'."""

    k = Parameter(2.0, positive=True, bounds=(0.1, 10.0), units="N/m",
                  description="stiffness")
    c = Parameter(0.1, positive=True, units="1/s")
    m = Parameter(1.5, fixed=True, units="kg")
    state_vars = (StateVar("x", units="m"), StateVar("v", units="m/s"))

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"x": 1.0, "v": 0.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"x": s["v"], "v": -self.k / self.m * s["x"] - self.c * s["v"]}


class _Cells(html.parser.HTMLParser):
    """The text of every table cell, to check the HTML is well formed and complete."""

    def __init__(self):
        super().__init__()
        self.cells, self._in = [], False

    def handle_starttag(self, tag, attrs):
        self._in = tag in ("td", "th")

    def handle_endtag(self, tag):
        self._in = False

    def handle_data(self, data):
        if self._in:
            self.cells.append(data)


def _cells(text: str) -> list[str]:
    parser = _Cells()
    parser.feed(text)
    return parser.cells


def test_system_repr_lists_parameters_bounds_units_and_state():
    text = repr(Spring(k=3.0, unknown_initial_state=["v"]))
    lines = text.splitlines()
    assert lines[0] == "Spring"
    row_k = next(line.split() for line in lines if line.strip().startswith("k "))
    assert row_k == ["k", "3", "(0.1,", "10)", "N/m", "free"]
    assert any(line.split()[:2] == ["m", "1.5"] and "fixed" in line for line in lines)
    assert "state: x [m], v [m/s]" in text and "unknown initial state (fitted): v" in text
    assert "Module" not in text and "ParameterDict" not in text  # not nn.Module's tree


def test_system_html_is_a_table_with_every_parameter():
    cells = _cells(Spring()._repr_html_())
    assert cells[:6] == ["name", "value", "bounds", "units", "status", "description"]
    assert ["k", "2", "(0.1, 10)", "N/m", "free", "stiffness"] == cells[6:12]
    assert "m" in cells and "kg" in cells


def test_html_escapes_user_text():
    s = Spring()
    s.add_parameter("z", Parameter(1.0, units="<b>x</b>"))
    out = s._repr_html_()
    assert "<b>x</b>" not in out and "&lt;b&gt;x&lt;/b&gt;" in out


@pytest.fixture(scope="module")
def spring_obs():
    return physode.simulate(Spring(k=2.5), np.linspace(0, 3, 15), y0=[[1.0, 0.0], [0.5, 0.2]],
                            noise=0.01, seed=0, observe="x")


def test_observations_repr_and_html(spring_obs):
    text = repr(spring_obs)
    first = text.splitlines()[0]
    assert first.startswith("Observations of ") and first.endswith(": 2 experiments, observed x")
    assert "exp0" in text and "exp1" in text and "x=0.01" in text and "[0, 3]" in text
    assert "2.5" in text and "N/m" in text  # the known values, with units
    assert "array(" not in text and len(text.splitlines()) < 15
    cells = _cells(spring_obs._repr_html_())
    assert "experiment" in cells and "exp1" in cells and "N/m" in cells


def test_fit_result_repr_and_html(spring_obs):
    res = physode.fit(Spring(), spring_obs, progress=False, compile=False, rtol=1e-6,
                      atol=1e-8)
    text = repr(res)
    assert text.startswith("FitResult of ") and "success (converged)" in text
    row_k = next(line.split() for line in text.splitlines() if line.strip().startswith("k "))
    assert row_k[0] == "k" and float(row_k[1]) == pytest.approx(2.5, rel=0.02)
    assert row_k[-1] == "N/m" and "2.5" in row_k  # the truth column
    assert str(res) == res.report()
    cells = _cells(res._repr_html_())
    assert {"statistic", "chi-square", "name", "stderr", "truth", "bounds", "units"} <= set(cells)
    assert "N/m" in cells
