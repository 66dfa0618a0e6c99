"""Plot labels (issue 19, item 11): series by their coordinates, nondimensionalised axes
as "units of", several experiments in a clear legend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import physode
from physode import Parameter, StateVar, System
from physode.estimate.plots import axis_label, compact_number, component_labels


def test_axis_labels_of_scaled_and_plain_units():
    assert axis_label("position", "5.326e+12 m") == "position [units of 5.326e12 m]"
    assert axis_label("time", "1285221297.6 s") == "time [units of 1.285e9 s]"
    assert axis_label("theta", "rad") == "theta [rad]"
    assert axis_label("S", None) == "S" and axis_label("S", "") == "S"
    assert axis_label("v", "1/s") == "v [1/s]"
    assert axis_label("x", "2.5e3") == "x [units of 2500]"
    assert compact_number(0.5) == "0.5" and compact_number(2.5e-7) == "2.5e-7"


def test_component_labels_use_coordinates():
    pos = StateVar("position", (2, 3), ("body", "axis"), {"body": (0, 1), "axis": "xyz"})
    assert component_labels(pos)[:4] == ["body 0 · x", "body 0 · y", "body 0 · z",
                                         "body 1 · x"]
    assert component_labels(pos, {"body": [1], "axis": [0, 2]}) == ["body 1 · x", "body 1 · z"]
    conc = StateVar("concentration", (3,), ("species",), {"species": ("S", "I", "R")})
    assert component_labels(conc, {"species": [1]}) == ["I"]
    assert component_labels(StateVar("theta")) == ["theta"]
    assert component_labels(StateVar("q", (2,), ("link",))) == ["link 0", "link 1"]


class Kinetics(System):
    """Two species decaying at rates k and 2k."""

    k = Parameter(0.5, positive=True)
    state_vars = (StateVar("c", (2,), ("species",), {"species": ("A", "B")}, units="mM"),)
    time_units = "1.5e3 s"

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"c": [1.0, 1.0]})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"c": -self.k * s["c"] * torch.tensor([1.0, 2.0], dtype=s["c"].dtype)}


@pytest.fixture(scope="module")
def figure():
    obs = physode.simulate(Kinetics(k=0.7), np.linspace(0, 2, 12), y0=[[1.0, 1.0], [0.5, 2.0]],
                           noise=0.01, seed=0)
    res = physode.fit(Kinetics(), obs, progress=False, compile=False, rtol=1e-7, atol=1e-9)
    return res.plot()


def test_fit_figure_labels_series_and_axes(figure):
    ax = figure.axes[0]
    _, labels = ax.get_legend_handles_labels()
    assert labels == ["exp0: A", "exp0: B", "exp1: A", "exp1: B"]
    assert ax.get_legend() is not None
    assert ax.get_ylabel() == "c [mM]"
    assert ax.get_xlabel() == "time [units of 1500 s]"
