"""`physode fit --store/--resume`: a run killed mid-way, resumed, runs only the starts it
had not finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import physode
import systems
from physode.cli import main as cli_main
from physode.estimate.multistart import SECTION, StartRecord
from physode.estimate.store import ResultStore


@pytest.fixture
def data(tmp_path: Path) -> Path:
    truth = systems.get("pendulum", length=1.2, damping=0.15)
    obs = physode.simulate(truth, np.linspace(0.0, 2.0, 8), noise=0.01, seed=2)
    path = tmp_path / "pendulum.h5"
    physode.save_observations(obs, path)
    return path


def _argv(data: Path, tmp: Path, *extra: str) -> list[str]:
    return ["fit", "pendulum", str(data), "--out", str(tmp / "fit.nc"), "--optimizer", "lm",
            "--rtol", "1e-6", "--atol", "1e-8", "--compile", "off", "--no-progress",
            "--store", str(tmp / "runs.h5"), *extra]


def _records(tmp: Path) -> dict[int, StartRecord]:
    path = tmp / "runs.h5"
    if not path.exists():
        return {}
    return ResultStore(path, resume=True).section(SECTION, StartRecord).done()


@pytest.mark.slow  # a subprocess fit killed and resumed: ~1 min on a loaded 2-core machine
def test_killed_run_resumes_only_unfinished_starts(data: Path, tmp_path: Path) -> None:
    argv = _argv(data, tmp_path, "--multistart", "7")
    proc = subprocess.Popen([sys.executable, "-m", "physode", *argv], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while len(_records(tmp_path)) < 2:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no start finished in time"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first = _records(tmp_path)
    assert 2 <= len(first) < 8
    # the killed file is complete and readable; without --resume it is refused
    assert cli_main.main(argv) == 2
    assert cli_main.main([*argv, "--resume"]) == 0
    second = _records(tmp_path)
    assert sorted(second) == list(range(8))
    for i, rec in first.items():  # finished starts were not run again
        assert second[i].wall_time == rec.wall_time
        np.testing.assert_array_equal(second[i].x, rec.x)
    assert (tmp_path / "fit.nc").exists()


def test_resume_needs_a_store_and_the_same_study(data: Path, tmp_path: Path, capsys) -> None:
    argv = _argv(data, tmp_path, "--multistart", "1")
    assert cli_main.main(argv) == 0
    assert len(_records(tmp_path)) == 2
    no_store = [a for a in argv if a not in ("--store", str(tmp_path / "runs.h5"))]
    assert cli_main.main([*no_store, "--resume"]) == 2
    assert "--resume needs --store" in capsys.readouterr().err
    assert cli_main.main([*argv, "--resume", "--seed", "5"]) == 2
    assert "another study: seed is 0 there, 5 now" in capsys.readouterr().err
    # a larger multistart on resume extends the study: only the new start runs
    before = _records(tmp_path)
    assert cli_main.main([*_argv(data, tmp_path, "--multistart", "2"), "--resume"]) == 0
    after = _records(tmp_path)
    assert sorted(after) == [0, 1, 2]
    assert all(after[i].wall_time == before[i].wall_time for i in before)
