"""A reaction network built from strings is saved and loaded back (issue 19, item 2): the
file stores its definition as data and the registry rebuilds it — never code."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

import physode
from physode.data.schema import SYSTEM_ARGS_ATTR
from physode.model import registry
from systems.kinetics import ReactionNetwork

REACTIONS = ["beta: S + I -> 2 I", "gamma: I -> R", "kf, kr: R <=> X", "d: X ->"]


def sir() -> ReactionNetwork:
    return ReactionNetwork(REACTIONS, {"beta": 0.4, "gamma": 0.12, "kf": 0.05, "kr": 0.02,
                                       "d": 0.01},
                           y0={"S": 0.99, "I": 0.01}, time_units="d",
                           concentration_units="fraction")


@pytest.fixture
def sir_file(tmp_path):
    obs = physode.simulate(sir(), np.linspace(0, 40, 21), noise=0.002, seed=1,
                           observe={"concentration": ["I"]})
    path = tmp_path / "sir.h5"
    physode.save_observations(obs, path)  # no system=: rebuilt from the stored definition
    return path


def test_definition_round_trips_through_the_registry():
    net = sir()
    args = net.registry_args()
    assert args is not None and net.registry_name == "reaction-network"
    json.dumps(args)  # plain data
    again = registry.get("reaction-network", references=False, **args)
    assert again.registry_args() == args
    y = torch.tensor([0.5, 0.3, 0.1, 0.1])
    torch.testing.assert_close(again(torch.tensor(0.0), y), net(torch.tensor(0.0), y))


def test_presets_are_rebuilt_by_name_alone():
    assert registry.get("robertson").registry_args() is None


def test_file_loads_without_a_system_and_fits(sir_file):
    obs = physode.load_observations(sir_file)
    assert obs.system == "reaction-network"
    system = obs.make_system()
    assert system.species == ("S", "I", "R", "X") and system.time_units == "d"
    assert float(system.param("beta").detach()) == pytest.approx(0.4)
    system.set_params(beta=0.3)
    for name in ("gamma", "kf", "kr", "d"):
        system.fix(name)
    res = physode.fit(system, obs, progress=False, compile=False, rtol=1e-7, atol=1e-9)
    assert res.params["beta"] == pytest.approx(0.4, rel=0.02)


def test_the_stored_definition_is_data_not_code(sir_file, tmp_path):
    with h5py.File(sir_file, "r+") as f:
        args = json.loads(f.attrs[SYSTEM_ARGS_ATTR])
        assert set(args) >= {"reactions", "rates", "species", "y0"}
        f.attrs[SYSTEM_ARGS_ATTR] = "os.system('echo pwned')"
    with pytest.raises(physode.InvalidObservations, match="root attribute 'system_args'"):
        physode.load_observations(sir_file)


def test_a_bad_definition_names_the_attribute(sir_file):
    with h5py.File(sir_file, "r+") as f:
        args = json.loads(f.attrs[SYSTEM_ARGS_ATTR])
        args["reactions"] = ["beta: S + -> I"]
        f.attrs[SYSTEM_ARGS_ATTR] = json.dumps(args)
    with pytest.raises(physode.InvalidObservations,
                       match="cannot build system 'reaction-network' from root attribute"):
        physode.load_observations(sir_file)
