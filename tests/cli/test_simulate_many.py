"""The command line for the rough edges of issue 19: several initial states and seeds in
``physode simulate`` (item 9), ``fit --fix/--free`` and ``--set`` of state variables
(item 10), and reaction-network files (item 2)."""

from __future__ import annotations

import numpy as np
import pytest

import physode
from physode.cli import main as cli_main
from physode.cli.build import build_system
from physode.data.hdf5 import read_observations
from physode.model import registry


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_repeated_y0_and_seeds(tmp_path, capsys):
    out = tmp_path / "p.h5"
    code, text, err = _run(capsys, "simulate", "pendulum", "--t1", "2", "--n", "9",
                           "--noise", "0.01", "--observe", "theta", "--y0", "1,0",
                           "--y0", "0.5,0.2", "--seed", "3", "4", "--out", str(out))
    assert code == 0, err
    assert "4 experiment(s)" in text
    obs = read_observations(out)
    assert obs.experiment_names == ["exp0", "exp1", "exp2", "exp3"]
    starts = [float(e.y0["theta"]) for e in obs.experiments]
    assert starts == [1.0, 0.5, 1.0, 0.5]
    assert [e.metadata["seed"] for e in obs.experiments] == [3, 3, 4, 4]
    # the same initial state with two seeds: the same trajectory, different noise
    a, b = obs.experiments[0].values["theta"], obs.experiments[2].values["theta"]
    assert not np.array_equal(a, b) and np.max(np.abs(a - b)) < 0.1


def test_simulate_y0_file(tmp_path, capsys):
    table = tmp_path / "y0.csv"
    table.write_text("# theta, omega\n1.0, 0.0\n0.3, -0.1\n0.2, 0.4\n")
    out = tmp_path / "p.h5"
    code, _, err = _run(capsys, "simulate", "pendulum", "--t1", "1", "--n", "5",
                        "--y0-file", str(table), "--out", str(out))
    assert code == 0, err
    obs = read_observations(out)
    assert [float(e.y0["omega"]) for e in obs.experiments] == [0.0, -0.1, 0.4]


def test_simulate_refuses_a_y0_of_the_wrong_size(tmp_path, capsys):
    code, _, err = _run(capsys, "simulate", "pendulum", "--y0", "1,0,3",
                        "--out", str(tmp_path / "p.h5"))
    assert code == 2 and "--y0 '1,0,3': expected 2 finite numbers" in err


@pytest.fixture
def pendulum_file(tmp_path):
    system = registry.get("pendulum", damping=0.3)
    obs = physode.simulate(system, np.linspace(0, 3, 16), noise=0.01, seed=0,
                           observe="theta")
    path = tmp_path / "pend.h5"
    physode.save_observations(obs, path, system=system)
    return path


def test_fit_fix_free_and_set_state_variable(pendulum_file, tmp_path, capsys):
    out = tmp_path / "fit.nc"
    code, text, err = _run(capsys, "fit", "pendulum", str(pendulum_file), "--out", str(out),
                           "--set", "damping=0.2", "--set", "omega=0.0", "--fix", "length",
                           "--no-progress", "--compile", "off", "--rtol", "1e-7")
    assert code == 0, err
    res = physode.read_netcdf(out)
    assert list(res["parameter"].values) == ["damping"]  # length fixed, damping fitted
    assert float(res["estimate"][0]) == pytest.approx(0.3, rel=0.1)
    assert "fixed: length=1" in text


def test_fit_set_of_an_unknown_name_is_a_one_line_error(pendulum_file, tmp_path, capsys):
    code, _, err = _run(capsys, "fit", "pendulum", str(pendulum_file), "--out",
                        str(tmp_path / "f.nc"), "--set", "nope=1")
    assert code == 2 and "nope" in err and len(err.strip().splitlines()) == 1


def test_fit_fix_and_free_of_the_same_name_is_refused(pendulum_file, tmp_path, capsys):
    code, _, err = _run(capsys, "fit", "pendulum", str(pendulum_file), "--out",
                        str(tmp_path / "f.nc"), "--fix", "damping", "--free", "damping")
    assert code == 2 and "--fix and --free both name ['damping']" in err


def test_reaction_network_files_work_on_the_command_line(tmp_path, capsys):
    from systems.kinetics import ReactionNetwork

    net = ReactionNetwork(["beta: S + I -> 2 I", "gamma: I -> R"], {"beta": 0.4, "gamma": 0.1},
                          y0={"S": 0.99, "I": 0.01})
    obs = physode.simulate(net, np.linspace(0, 40, 21), noise=0.002, seed=1,
                           observe={"concentration": ["I"]})
    data = tmp_path / "sir.h5"
    physode.save_observations(obs, data)
    out = tmp_path / "fit.nc"
    code, text, err = _run(capsys, "fit", "reaction-network", str(data), "--out", str(out),
                           "--set", "beta=0.3", "--set", "I=0.02", "--fix", "gamma",
                           "--no-progress", "--compile", "off", "--rtol", "1e-7")
    assert code == 0, err
    res = physode.read_netcdf(out)
    assert list(res["parameter"].values) == ["beta"]
    assert float(res["initial"][0]) == pytest.approx(0.3)
    assert "reaction-network" in text


def test_set_accepts_state_variables_species_and_y0():
    assert build_system("pendulum", {"omega": 0.3}).y0.tolist() == [1.0, 0.3]
    assert build_system("pendulum", {"y0": [0.2, 0.1]}).y0.tolist() == [0.2, 0.1]
    rob = build_system("robertson", {"B": 0.5, "k1": 0.05})
    assert rob.y0.tolist() == [1.0, 0.5, 0.0]
    assert float(rob.param("k1").detach()) == pytest.approx(0.05)
    pend = build_system("pendulum", {"theta": 0.4}, fix=["length"], free=["g"])
    assert pend.y0.tolist() == [0.4, 0.0]
    assert "length" not in pend.free_names() and "g" in pend.free_names()
    with pytest.raises(physode.InvalidArgument, match="--set omega: 1 value"):
        build_system("pendulum", {"omega": [1.0, 2.0]})


def test_systems_verbose_lists_the_network_that_needs_arguments(capsys):
    code, text, err = _run(capsys, "systems", "-v")
    assert code == 0, err
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("reaction-network"))
    assert "built from arguments" in lines[i + 1]
