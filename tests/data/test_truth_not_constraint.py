"""Known parameter values in a data file are information, never a constraint on the model
fitted to it (issue 19, item 1), and what else a simulated file hands to a fit: the
initial states of unknown variables (item 3) and the noise level (item 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import physode
from physode import Parameter, StateVar, System
from physode.data.hdf5 import read_observations

FAST = {"progress": False, "compile": False, "rtol": 1e-9, "atol": 1e-11, "optimizer": "lm"}


class Decay(System):
    """dy/dt = -k y."""

    k = Parameter(0.3, positive=True)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 1.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": -self.k * s["y"]}


class DecayWithOffset(System):
    """Another model of the same data: dy/dt = -rate y + c, with no parameter ``k``."""

    rate = Parameter(0.3, positive=True)
    c = Parameter(0.0)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 1.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": -self.rate * s["y"] + self.c}


@pytest.fixture
def decay_file(tmp_path):
    obs = physode.simulate(Decay(k=0.4), np.linspace(0, 5, 30), noise=0.01, seed=2)
    path = tmp_path / "decay.h5"
    physode.save_observations(obs, path, system=Decay())
    return path


def test_truth_outside_the_bounds_of_the_fitted_parameter_loads_and_fits(decay_file):
    system = Decay(k=Parameter(0.25, positive=True, bounds=(0.0, 0.35)))
    obs = physode.load_observations(decay_file, system=system)  # no "bounds exclude 0.4"
    res = physode.fit(system, obs, **{**FAST, "max_iter": 12})
    assert res.truth == {"k": 0.4}  # still shown as the truth, for comparison
    assert "truth" in res.report().split("[[Variables]]")[1].splitlines()[1]
    assert res.uncertainty.at_bound == ["k"] and np.isnan(res.errors[0])


def test_a_model_without_the_true_parameters_can_be_fitted(decay_file):
    obs = read_observations(decay_file)
    res = physode.fit(DecayWithOffset(), obs, **FAST)
    assert res.success and res.truth == {}  # no name matches: no truth column
    assert res.params["rate"] == pytest.approx(0.4, rel=0.1)
    header = res.report().split("[[Variables]]")[1].splitlines()[1]
    assert "truth" not in header and not res.uncertainty.at_bound


def test_units_of_cleared_parameter_values_are_not_an_error(decay_file):
    obs = read_observations(decay_file)
    obs.parameters = {}  # parameter_units stay: harmless information
    obs.parameter_units = {"k": "1/s"}
    obs.validate(Decay())
    physode.fit(Decay(), obs, **FAST)


def test_a_truth_of_another_shape_is_not_reported(decay_file):
    obs = read_observations(decay_file)
    obs.parameters = {"k": np.array([0.4, 0.5])}
    res = physode.fit(Decay(), obs, **FAST)
    assert res.truth == {}


def test_non_finite_known_values_are_still_refused(decay_file):
    obs = read_observations(decay_file)
    obs.parameters = {"k": np.array(np.nan)}
    with pytest.raises(physode.InvalidObservations, match="'/parameters', dataset 'k'.*finite"):
        obs.validate(Decay())


class Oscillator(System):
    """x'' = -w^2 x as (x, v)."""

    w = Parameter(1.0, positive=True)
    state_vars = (StateVar("x"), StateVar("v"))

    def vector_field(self, t, s):
        return {"x": s["v"], "v": -self.w**2 * s["x"]}


def test_unknown_initial_states_start_from_the_files_values():
    truth = Oscillator(w=1.3, y0=[1.0, 0.0])
    obs = physode.simulate(truth, np.linspace(0, 4, 40), y0=[[1.0, 0.7], [0.5, -0.4]],
                           noise=0.01, seed=1, observe="x")
    system = Oscillator(w=1.2, y0=[1.0, 0.0], unknown_initial_state=["v"])
    res = physode.fit(system, obs, **FAST)
    start = dict(zip(res.labels, res.initial_values))
    assert start["y0.v[0]"] == pytest.approx(0.7) and start["y0.v[1]"] == pytest.approx(-0.4)
    assert res.value["w"] == pytest.approx(1.3, rel=0.02)


def _settings_attrs(res):
    return res.to_xarray().attrs


def test_netcdf_noise_sigma_only_when_estimated(decay_file):
    given = physode.fit(Decay(), read_observations(decay_file), **FAST)
    assert not given.sigma_estimated and "noise_sigma" not in _settings_attrs(given)
    obs = read_observations(decay_file)
    obs.experiments[0].sigma.clear()
    estimated = physode.fit(Decay(), obs, **FAST)
    attrs = _settings_attrs(estimated)
    assert estimated.sigma_estimated
    assert attrs["noise_sigma"] == pytest.approx(estimated.noise_sigma)
    assert attrs["noise_sigma"] == pytest.approx(0.01, rel=0.4)
    torch.testing.assert_close(torch.tensor(estimated.values), torch.tensor(given.values),
                               rtol=1e-6, atol=0)
