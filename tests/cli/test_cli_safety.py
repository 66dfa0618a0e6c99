"""The command line never destroys an input, checks every output before the work, exits with
a documented status for an unconverged or failed fit, and answers bad arguments in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import physode
from physode import Parameter, StateVar, System
from physode.cli import base as cli_base
from physode.cli import main as cli_main
from physode.cli.checks import same_file
from physode.cli.commands import demo as demo_cmd

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--no-progress", "--compile", "off", "--rtol", "1e-5", "--atol", "1e-7"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("physode: error: ")
    assert "Traceback" not in err and ".tmp" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pend.h5"
    obs = physode.simulate("pendulum", np.linspace(0.0, 1.0, 6), observe=["theta"],
                           noise=0.01, seed=1, rtol=1e-6, atol=1e-8)
    physode.save_observations(obs, path)
    return path


@pytest.fixture
def no_fit(monkeypatch):
    """Fail the test if a fit starts: the checks must come before any work."""
    from physode.estimate import fit as fit_module

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the fit started although an argument was unusable")

    monkeypatch.setattr(fit_module, "fit", refuse)


# ------------------------------------------------------------------------- item 6
def test_an_output_that_is_the_input_is_refused_before_any_work(data_file, tmp_path, capsys,
                                                                 no_fit) -> None:
    work = tmp_path / "work"
    work.mkdir()
    data = work / "same.h5"
    data.write_bytes(data_file.read_bytes())
    before = data.read_bytes()
    (work / "link.h5").symlink_to(data)
    os.link(data, work / "hard.h5")
    (work / "sub").mkdir()
    cases = [
        [str(data), "--out", str(data)],  # same path
        [str(data), "--out", str(work / "sub" / ".." / "same.h5")],  # same file, other spelling
        [str(data), "--out", str(work / "link.h5")],  # a link to the input
        [str(work / "link.h5"), "--out", str(data)],  # the input is a link to the output
        [str(data), "--out", str(work / "hard.h5")],  # same inode
        [str(data), "--out", str(work / "f.nc"), "--plot", str(data)],  # the figure
    ]
    for argv in cases:
        code, out, err = _run(capsys, "fit", "pendulum", *argv, *TINY)
        _assert_one_line_error(code, err, "is the input", "refusing to overwrite")
        assert out == ""
        assert data.read_bytes() == before
    assert sorted(os.listdir(work)) == ["hard.h5", "link.h5", "same.h5", "sub"]
    code, _, err = _run(capsys, "fit", "pendulum", str(data), "--out", str(work / "r.nc"),
                        "--plot", str(work / "r.nc"), *TINY)
    _assert_one_line_error(code, err, "--plot", "--out", "same file")


def test_demo_refuses_to_write_over_its_data(tmp_path, capsys, data_file, no_fit) -> None:
    out_dir = tmp_path / "res"
    out_dir.mkdir()
    data = out_dir / "three_body_fit.nc"
    data.write_bytes(data_file.read_bytes())
    code, _, err = _run(capsys, "demo", "--data", str(data), "--out-dir", str(out_dir), *TINY)
    _assert_one_line_error(code, err, "is the input --data", str(data))
    assert data.read_bytes() == data_file.read_bytes()
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    code, _, err = _run(capsys, "demo", "--data", str(data_file), "--out-dir", str(a_file),
                        *TINY)
    _assert_one_line_error(code, err, "--out-dir", str(a_file))


def test_same_file() -> None:
    assert same_file(__file__, Path(__file__).parent / ".." / "cli" / Path(__file__).name)
    assert not same_file(__file__, ROOT / "pyproject.toml")
    assert not same_file(__file__, ROOT / "no-such-file")


# ------------------------------------------------------------------------- item 7
def _unwritable(tmp_path: Path) -> list[tuple[str, str]]:
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    cases = [(str(tmp_path), "is a directory"), ("", "empty path"),
             (str(a_file / "x.nc"), "directory"), (str(a_file / "deeper" / "x.nc"), "directory"),
             (str(tmp_path) + os.sep, "directory")]
    if os.path.isdir("/proc/self"):
        cases.append(("/proc/x", "cannot create files in '/proc'"))
    return cases


def test_unwritable_outputs_are_refused_before_the_fit(data_file, tmp_path, capsys,
                                                       no_fit) -> None:
    for path, fragment in _unwritable(tmp_path):
        for flag in ("--out", "--plot"):
            argv = ["--out", str(tmp_path / "ok.nc"), "--plot", path] if flag == "--plot" \
                else ["--out", path]
            code, _, err = _run(capsys, "fit", "pendulum", str(data_file), *argv, *TINY)
            _assert_one_line_error(code, err, f"{flag} {path}".strip(), fragment)
    code, _, err = _run(capsys, "fit", "pendulum", str(data_file), "--out",
                        str(tmp_path / "f.nc"), "--plot", str(tmp_path / "f.xyz"), *TINY)
    _assert_one_line_error(code, err, "--plot", "f.xyz", "unknown image format 'xyz'")
    assert sorted(os.listdir(tmp_path)) == ["plain.txt"]


def test_simulate_checks_its_output_first(tmp_path, capsys, monkeypatch) -> None:
    from physode.data import simulate as simulate_module

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("simulated although --out is unusable")

    monkeypatch.setattr(simulate_module, "simulate", refuse)
    for path, fragment in _unwritable(tmp_path):
        code, _, err = _run(capsys, "simulate", "pendulum", "--n", "3", "--out", path)
        _assert_one_line_error(code, err, f"--out {path}".strip(), fragment)
    assert sorted(os.listdir(tmp_path)) == ["plain.txt"]


def test_missing_output_directories_are_created(tmp_path, capsys) -> None:
    out = tmp_path / "a" / "b" / "p.h5"
    code, _, err = _run(capsys, "simulate", "pendulum", "--n", "3", "--rtol", "1e-6",
                        "--atol", "1e-8", "--out", str(out))
    assert code == 0, err
    assert physode.load_observations(out).system == "pendulum"


# ------------------------------------------------------------------------- item 11
@pytest.mark.parametrize("argv, fragments", [
    (["fit", "pendulum", "DATA", "--out", "x.nc", "--seed", "-1"], ["--seed", ">= 0", "-1"]),
    (["fit", "pendulum", "DATA", "--out", "x.nc", "--multistart", "-1"], ["--multistart"]),
    (["fit", "pendulum", "DATA", "--out", "x.nc", "--max-iter", "-3"], ["--max-iter", ">= 1"]),
    (["fit", "pendulum", "DATA", "--out", "x.nc", "--rtol", "0"], ["--rtol", "> 0"]),
    (["fit", "pendulum", "DATA", "--out", "x.nc", "--rtol", "nan"], ["--rtol", "finite"]),
    (["fit", "pendulum", "DATA", "--out", "x.nc", "--atol=-1e-9"], ["--atol", ">= 0"]),
    (["fit", "pendulum", "DATA", "--out", "x.nc", "--atol", "inf"], ["--atol", "finite"]),
    (["fit", "pendulum", "DATA", "--out", "x.nc", "--seed", "1.5"], ["--seed", "invalid int"]),
    (["fit", "pendulum", "DATA", "--out", "x.nc", "--set", "length=nan"], ["--set", "finite"]),
    (["fit", "pendulum", "DATA", "--out", "x.nc", "--set", "length=1,inf"], ["--set"]),
    (["fit", "pendulum", "DATA", "--out", "x.nc", "--method", "nosuch"], ["nosuch"]),
    (["fit", "pendulum", "DATA", "--out", "x.nc", "--unknown-initial-state", "psi"], ["psi"]),
    (["fit", "pendulum", ".", "--out", "x.nc"], [".", "is a directory"]),
    (["fit", "pendulum", "", "--out", "x.nc"], ["DATA.h5", "empty path"]),
    (["demo", "--data", "", "--out-dir", "res"], ["--data", "empty path"]),
    (["demo", "--data", "DATA", "--out-dir", "res", "--seed", "-2"], ["--seed"]),
    (["simulate", "pendulum", "--seed", "-1", "--out", "x.h5"], ["--seed", ">= 0"]),
    (["simulate", "pendulum", "--n", "0", "--out", "x.h5"], ["--n", ">= 1"]),
    (["simulate", "pendulum", "--n", "-4", "--out", "x.h5"], ["--n", ">= 1"]),
    (["simulate", "pendulum", "--n", "10000000000000", "--out", "x.h5"], ["--n", "<="]),
    (["simulate", "pendulum", "--noise", "-0.1", "--out", "x.h5"], ["--noise", ">= 0"]),
    (["simulate", "pendulum", "--noise", "nan", "--out", "x.h5"], ["--noise", "finite"]),
    (["simulate", "pendulum", "--t0", "nan", "--out", "x.h5"], ["--t0", "finite"]),
    (["simulate", "pendulum", "--t1", "inf", "--out", "x.h5"], ["--t1", "finite"]),
    (["simulate", "pendulum", "--rtol", "-1", "--out", "x.h5"], ["--rtol", "> 0"]),
    (["simulate", "pendulum", "--atol", "nan", "--out", "x.h5"], ["--atol", "finite"]),
    (["simulate", "pendulum", "--set", "g=inf", "--out", "x.h5"], ["--set", "finite"]),
])
def test_bad_arguments_are_one_line_errors_naming_the_argument(argv, fragments, data_file,
                                                                tmp_path, monkeypatch,
                                                                capsys) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [str(data_file) if a == "DATA" else a for a in argv]
    code, _, err = _run(capsys, *argv, *(TINY[:3] if argv[0] != "simulate" else []))
    _assert_one_line_error(code, err, *fragments)
    assert sorted(os.listdir(tmp_path)) == []


# ------------------------------------------------------------------------- item 10
class _FakeResult:
    """What the CLI reads of a FitResult: status, success, interrupted, failure, chi2."""

    def __init__(self, status: str, chi2: float = 1.0, stop_reason: str = "max_iter reached",
                 failure: str | None = None) -> None:
        self.status, self.chi2, self.stop_reason, self.failure = (status, chi2, stop_reason,
                                                                  failure)
        self.success = status == "converged"
        self.interrupted = status == "interrupted"

    def report(self) -> str:
        return "[[Fit Statistics]]"

    def save(self, path: Any) -> None:
        Path(path).write_bytes(b"netcdf")

    def plot(self, path: Any) -> None:
        Path(path).write_bytes(b"png")


@pytest.mark.parametrize("result, status, message", [
    (_FakeResult("converged", stop_reason="ftol satisfied"), 0, None),
    (_FakeResult("max_iter"), 3, "fit did not converge (max_iter reached)"),
    (_FakeResult("stalled", stop_reason="no progress"), 3, "fit did not converge (no progress)"),
    (_FakeResult("failed", chi2=float("inf"), stop_reason="model cannot be solved",
                 failure="step size underflow at t=0.5\nlooks stiff: try rodas4"), 4,
     "fit failed (step size underflow at t=0.5)"),
    (_FakeResult("failed", chi2=float("inf"), stop_reason="model cannot be solved"), 4,
     "fit failed (model cannot be solved)"),
    (_FakeResult("interrupted"), 130, None),
])
def test_exit_status_says_whether_the_fit_converged(result, status, message, data_file,
                                                    tmp_path, monkeypatch, capsys) -> None:
    from physode.estimate import fit as fit_module

    monkeypatch.setattr(fit_module, "fit", lambda *a, **k: result)
    out, png = tmp_path / "fit.nc", tmp_path / "fit.png"
    code, stdout, err = _run(capsys, "fit", "pendulum", str(data_file), "--out", str(out),
                             "--plot", str(png), *TINY)
    assert code == status, err
    assert out.read_bytes() == b"netcdf" and png.read_bytes() == b"png"  # saved in every case
    assert "[[Fit Statistics]]" in stdout
    if message is None:
        assert "Traceback" not in err and "error" not in err
    else:
        assert err.strip().splitlines() == [f"physode: {message}; " + (
            "results saved" if status == 3 else "saved what there is")]


def test_exit_codes_are_documented() -> None:
    for argv in (["fit", "--help"], ["--help"], ["demo", "--help"]):
        text = cli_main.build_parser()
        with pytest.raises(SystemExit) as info:
            text.parse_args(argv)
        assert info.value.code == 0
    helps = {}
    for name in ("fit", "demo"):
        parser = cli_main.build_parser()
        sub = next(a for a in parser._actions if a.dest == "command")
        helps[name] = sub.choices[name].format_help()
    helps["physode"] = cli_main.build_parser().format_help()
    for text in helps.values():
        assert "exit status:" in text
        for code in ("0 ", "2 ", "3 ", "4 ", "130", "143"):
            assert f"\n  {code}" in text, (code, text)
        assert "did not converge" in text
    assert (cli_base.EXIT_USAGE, cli_base.EXIT_NOT_CONVERGED, cli_base.EXIT_FAILED,
            cli_base.EXIT_INTERRUPTED, cli_base.EXIT_TERMINATED) == (2, 3, 4, 130, 143)
    for code in ("3", "130", "143"):
        assert code in (cli_main.__doc__ or "")


def test_an_unconverged_fit_exits_3(data_file, tmp_path, capsys) -> None:
    out = tmp_path / "fit.nc"
    code, stdout, err = _run(capsys, "fit", "pendulum", str(data_file), "--out", str(out),
                             "--optimizer", "lm", "--max-iter", "1", "--set", "length=1.5",
                             *TINY)
    assert code == cli_base.EXIT_NOT_CONVERGED, err
    assert out.exists() and "[[Variables]]" in stdout
    assert "Traceback" not in err and "did not converge" in err


class Blowup(System):
    """dy/dt = -k y / (1 - c): c = 1 makes the field infinite at the start."""

    k = Parameter(1.0, positive=True)
    c = Parameter(0.0, fixed=True)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw: Any) -> None:
        super().__init__()
        self.set_initial_state({"y": 1.0})
        self.configure(**kw)

    def vector_field(self, t: torch.Tensor, s: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"y": -self.k * s["y"] / (1.0 - self.c)}


@pytest.fixture
def blowup_file(tmp_path, monkeypatch) -> Path:
    from physode.model import registry

    registry.available()  # discover the plugins first, then register on a copy
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("cli-test-blowup")(Blowup)
    obs = physode.simulate("cli-test-blowup", [0.0, 0.5, 1.0], rtol=1e-6)
    path = tmp_path / "blowup.h5"
    physode.save_observations(obs, path)
    return path


@pytest.mark.parametrize("optimizer", ["lm", "lbfgs"])
def test_a_model_that_cannot_be_solved_at_the_start_is_not_a_traceback(
        blowup_file, optimizer, tmp_path, capsys) -> None:
    out = tmp_path / "b.nc"
    code, _, err = _run(capsys, "fit", "cli-test-blowup", str(blowup_file), "--out", str(out),
                        "--optimizer", optimizer, "--set", "c=1", "--max-iter", "2", *TINY)
    assert "Traceback" not in err
    if code == cli_base.EXIT_USAGE:  # refused as a physode error
        _assert_one_line_error(code, err)
    else:  # or a failed fit, saved with its reason
        assert code == cli_base.EXIT_FAILED, err
        assert out.exists() and "fit failed" in err


def test_a_tiny_length_is_not_a_traceback(data_file, tmp_path, capsys) -> None:
    out = tmp_path / "f.nc"
    code, _, err = _run(capsys, "fit", "pendulum", str(data_file), "--out", str(out),
                        "--optimizer", "lm", "--set", "length=1e-300", "--max-iter", "2",
                        "--max-steps", "500", *TINY)
    assert "Traceback" not in err
    if code == cli_base.EXIT_USAGE:
        _assert_one_line_error(code, err, "length" if "length" in err else "")
    else:
        assert code in (cli_base.EXIT_NOT_CONVERGED, cli_base.EXIT_FAILED), err


# ------------------------------------------------------------------------- item 8 (CLI)
@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_during_a_write_exits_143_and_leaves_nothing(tmp_path) -> None:
    code = textwrap.dedent("""
        import sys, time
        from physode.cli.base import command
        from physode.cli.main import main
        from physode.data.atomic import atomic_path

        @command("hang-test", "write slowly", lambda p: p.add_argument("out"))
        def hang(args):
            with atomic_path(args.out) as tmp:
                tmp.write_bytes(b"half written")
                print("ready", flush=True)
                time.sleep(60)
            return 0

        sys.exit(main(["hang-test", sys.argv[1]]))
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = tmp_path / "out.h5"
    out.write_bytes(b"previous")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        assert len(os.listdir(tmp_path)) == 2  # the output and its temporary
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == cli_base.EXIT_TERMINATED, err
    assert err.strip() == "physode: terminated (SIGTERM)"
    assert os.listdir(tmp_path) == ["out.h5"] and out.read_bytes() == b"previous"


def test_demo_finds_the_shipped_dataset() -> None:
    assert demo_cmd.default_data().is_file()
    assert demo_cmd.default_data() == ROOT / "datasets" / demo_cmd.DATA

