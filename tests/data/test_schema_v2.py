"""Schema version 2: observables, noise models, conditions, dosing, inputs, pre-equilibration
and parameter declarations round-trip through HDF5; version-1 files still load."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from torch import Tensor

import physode
from physode import Parameter, StateVar, System
from physode.data.experiment_parts import InputSeries, NoiseSpec
from physode.errors import InvalidObservations
from physode.model.observables import Dose
from physode.model.priors import LogNormal, Normal

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


class Feed(System):
    """Two-state toy with an observable, an input and a dose target."""

    k = Parameter(0.5, positive=True)
    scale = Parameter(2.0, positive=True)
    state_vars = (StateVar("a"), StateVar("b"))
    observable_vars = (StateVar("total", units="mM"),)
    input_names = ("u",)

    def __init__(self) -> None:
        super().__init__()
        self.set_initial_state({"a": 1.0, "b": 0.0})

    def vector_field(self, t: Tensor, s: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"a": self.input("u", t) - self.k * s["a"], "b": self.k * s["a"]}

    def observables(self, t: Tensor, s: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"total": self.scale * (s["a"] + s["b"])}


def _observations() -> physode.Observations:
    t = np.linspace(0.0, 2.0, 5)
    e1 = physode.Experiment(
        t=t, values={"total": np.linspace(2, 3, 5), "a": np.ones(5)}, name="e1",
        noise={"total": NoiseSpec("normal", "log", a=0.1),
               "a": NoiseSpec("laplace", a="sigma_a", b=0.05)},
        conditions={"scale": "scale_e1", "k": 0.7},
        dosing=[Dose(1.0, 0.5, "a"), Dose(1.5, "k", "b")],
        inputs={"u": InputSeries([0.0, 1.0, 2.0], [0.0, 1.0, 0.5], "constant")},
        preequilibration={"k": 0.2})
    e2 = physode.Experiment(t=t, values={"total": np.linspace(2, 3, 5)}, name="e2",
                            inputs={"u": InputSeries([0.0, 2.0], [1.0, 1.0], "linear")},
                            preequilibration={})
    return physode.Observations(
        system=f"{Feed.__module__}:Feed", experiments=[e1, e2],
        declarations={"scale_e1": Parameter(2.0, positive=True, prior=Normal(2.0, 0.5)),
                      "sigma_a": Parameter(0.1, positive=True, bounds=(0.0, 1.0),
                                           prior=LogNormal(-2.0, 1.0), units="mM")})


def test_round_trip_of_every_part(tmp_path: Path) -> None:
    obs = _observations()
    path = tmp_path / "v2.h5"
    physode.save_observations(obs, path, system=Feed())
    with h5py.File(path) as f:
        assert int(f.attrs["schema_version"]) == 2
        assert sorted(f["experiments/e1"]) == ["conditions", "dosing", "inputs", "noise",
                                              "preequilibration", "time", "values"]
    back = physode.load_observations(path, system=Feed())
    assert back.equals(obs)
    assert back[0].noise["a"].a == "sigma_a"
    assert back[0].dosing[1].amount == "k"
    assert back[1].preequilibration == {}
    assert back.declarations["sigma_a"].prior == LogNormal(-2.0, 1.0)


def test_version_1_files_still_load() -> None:
    path = DATASETS / "pendulum_damped.h5"
    with h5py.File(path) as f:
        assert int(f.attrs["schema_version"]) == 1
    obs = physode.load_observations(path)
    assert obs.schema_version == 1
    exp = obs[0]
    assert exp.noise == {} and exp.conditions == {} and exp.dosing == []
    assert exp.inputs == {} and exp.preequilibration is None and obs.declarations == {}


def test_saving_a_version_1_object_keeps_version_1(tmp_path: Path) -> None:
    obs = physode.load_observations(DATASETS / "pendulum_damped.h5")
    physode.save_observations(obs, tmp_path / "again.h5")
    assert physode.load_observations(tmp_path / "again.h5").equals(obs)


def _violations(obs: physode.Observations) -> str:
    with pytest.raises(InvalidObservations) as info:
        obs.validate(Feed())
    return str(info.value)


def test_bad_parts_are_named() -> None:
    obs = _observations()
    obs[0].conditions["kk"] = 1.0
    obs[0].values["concentration"] = np.ones(5)
    obs[1].inputs["u"] = InputSeries([0.0, 2.0, 1.0], [1.0, 1.0, 1.0])
    text = _violations(obs)
    assert "group '/experiments/e1'/conditions: attribute 'kk': Feed has no parameter 'kk'" \
        in text
    assert ("group '/experiments/e1/values', dataset 'concentration': the system has no state "
            "variable 'concentration' and no observable of that name") in text
    assert "group '/experiments/e2'/inputs/u: times must be strictly increasing" in text


def test_noise_parameter_must_exist() -> None:
    obs = _observations()
    obs.declarations.pop("sigma_a")
    assert "noise parameter 'sigma_a' is neither a parameter of Feed" in _violations(obs)


def test_a_missing_input_is_named() -> None:
    obs = _observations()
    obs[1].inputs.clear()
    assert "reads the input(s) ['u'], which the experiment does not give" in _violations(obs)


def test_noise_models_refuse_nonsense() -> None:
    with pytest.raises(InvalidObservations, match="a = b = 0"):
        NoiseSpec(a=0.0, b=0.0)
    with pytest.raises(InvalidObservations, match="noise distribution 'cauchy'"):
        NoiseSpec("cauchy")
    with pytest.raises(InvalidObservations, match="must be finite and >= 0"):
        NoiseSpec(a=-1.0)


def test_xarray_labels_observables_conditions_and_events(tmp_path: Path) -> None:
    from physode.data.labelled import observations_to_xarray, read_netcdf, write_netcdf

    ds = observations_to_xarray(_observations(), system=Feed())
    assert ds["total"].attrs["output_kind"] == "observable"
    assert list(ds["condition_scale"].values) == ["scale_e1", ""]
    assert np.isnan(ds["condition_k"].values[1]) and ds["condition_k"].values[0] == 0.7
    assert list(ds["preequilibrated"].values) == [1, 1]
    assert ds["dose_time"].values[0].tolist() == [1.0, 1.5]
    assert ds["dose_amount_parameter"].values[0].tolist() == ["", "k"]
    assert ds["input_u"].attrs["interpolation"] == "constant, linear"
    assert "laplace (lin)" in ds["a"].attrs["noise_e1"]
    write_netcdf(ds, tmp_path / "v2.nc")
    back = read_netcdf(tmp_path / "v2.nc")
    assert back["dose_target"].values[0].tolist() == ["a", "b"]
