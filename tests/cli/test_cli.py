"""The ``physode`` command line: subcommands, output, exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import physode
from physode.cli import base as cli_base
from physode.cli import main as cli_main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("physode: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_systems_lists_the_registry(capsys) -> None:
    code, out, _ = _run(capsys, "systems")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert {"robertson", "three-body-paper", "pendulum", "michaelis-menten"} <= set(names)
    code, out, _ = _run(capsys, "systems", "-v")
    assert code == 0 and "state concentration (species=3)" in out and "param k1" in out


def test_simulate_then_inspect(tmp_path: Path, capsys) -> None:
    out_file = tmp_path / "mm.h5"
    code, out, err = _run(capsys, "simulate", "michaelis-menten", "--t0", "0", "--t1", "20",
                          "--n", "5", "--noise", "0.1", "--seed", "4", "--observe",
                          "concentration=S,P", "--set", "kcat=0.2", "--rtol", "1e-7",
                          "--atol", "1e-9", "--out", str(out_file))
    assert code == 0, err
    assert f"wrote {out_file}" in out
    obs = physode.load_observations(out_file)
    assert obs.system == "michaelis-menten" and obs.metadata["seed"] == 4
    assert obs[0].values["concentration"].shape == (5, 2)
    assert float(obs[0].sigma["concentration"]) == 0.1
    assert float(obs.parameters["kcat"]) == pytest.approx(0.2)
    np.testing.assert_allclose(obs[0].t, np.linspace(0, 20, 5))

    code, out, _ = _run(capsys, "inspect", str(out_file))
    assert code == 0
    assert "system 'michaelis-menten'" in out
    assert "experiments: 1" in out
    assert "5 times in [0, 20]" in out
    assert "concentration: shape (5, 2) float64" in out and "species=[0, 3]" in out
    assert "sigma 0.1" in out

    nc = tmp_path / "mm.nc"
    physode.write_netcdf(physode.to_xarray(obs), nc)
    code, out, _ = _run(capsys, "inspect", str(nc))
    assert code == 0
    assert "netCDF dataset, system 'michaelis-menten'" in out
    assert "dimensions: experiment=1, time=5, species=2" in out
    assert "time: 5 values in [0, 20]" in out
    assert "concentration: (experiment=1, time=5, species=2) float64" in out


def test_simulate_log_time_and_observe_scalar(tmp_path: Path, capsys) -> None:
    out_file = tmp_path / "p.h5"
    code, _, err = _run(capsys, "simulate", "pendulum", "--t0", "0.01", "--t1", "1", "--n", "3",
                        "--log-time", "--observe", "theta", "--rtol", "1e-6", "--out",
                        str(out_file))
    assert code == 0, err
    obs = physode.load_observations(out_file)
    np.testing.assert_allclose(obs[0].t, [0.01, 0.1, 1.0])
    assert obs[0].t0 == 0.0 and obs.variables == ("theta",)


@pytest.mark.parametrize("argv, fragments", [
    (["simulate", "no-such-system", "--out", "x.h5"], ["unknown system 'no-such-system'"]),
    (["simulate", "pendulum"], ["--out"]),
    (["simulate", "pendulum", "--n", "many", "--out", "x.h5"], ["invalid int value"]),
    (["simulate", "pendulum", "--observe", "psi", "--out", "x.h5"], ["no state variable 'psi'"]),
    (["simulate", "pendulum", "--set", "length=-1", "--out", "x.h5"], ["length"]),
    (["simulate", "pendulum", "--log-time", "--out", "x.h5"], ["--log-time needs t0 > 0"]),
    (["inspect", "does-not-exist.h5"], ["does-not-exist.h5", "no such file"]),
    (["no-such-command"], ["invalid choice"]),
    ([], []),
])
def test_user_errors_print_one_line_and_exit_2(argv, fragments, tmp_path, monkeypatch,
                                               capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, *argv)
    if not argv:  # no subcommand: usage on stderr, status 2
        assert code == 2 and "usage" in err
        return
    _assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "x.h5").exists()


def test_inspect_reports_invalid_files_in_one_line(tmp_path: Path, capsys) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    code, _, err = _run(capsys, "inspect", str(text))
    _assert_one_line_error(code, err, "notes.h5", "not an HDF5 file")
    obs = physode.simulate("pendulum", [0.0, 0.5], rtol=1e-6)
    good = tmp_path / "good.h5"
    physode.save_observations(obs, good)
    import h5py

    with h5py.File(good, "r+") as f:
        f.attrs["schema_version"] = 99
    code, _, err = _run(capsys, "inspect", str(good))
    _assert_one_line_error(code, err, "good.h5", "schema version 99 is newer")


def test_subcommands_are_registered_not_hard_wired(capsys) -> None:
    seen = []

    @cli_base.command("echo-test", "test-only command",
                 lambda p: p.add_argument("word"))
    def _echo(args):
        seen.append(args.word)
        return 0

    try:
        code, _, _ = _run(capsys, "echo-test", "hello")
        assert code == 0 and seen == ["hello"]
        assert {"systems", "simulate", "inspect"} <= set(cli_base.COMMANDS)
    finally:
        cli_base.COMMANDS.pop("echo-test", None)


def test_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    code = "import sys; from physode.cli.main import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", code, "inspect", str(tmp_path / "nope.h5")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"physode: error: {tmp_path / 'nope.h5'}: "
                                                "no such file"]
    assert proc.stdout == ""
