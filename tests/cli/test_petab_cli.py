"""``physode petab inspect|fit|export`` end to end on a tiny PEtab problem
(tests/petab/tiny_problem.py: closed-form likelihood, two conditions, a time switch)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import xarray as xr

import physode
import physode.petab as petab
from physode.cli import main as cli_main
from physode.petab.fitting import draw_starts

_SPEC = importlib.util.spec_from_file_location(
    "tiny_problem", Path(__file__).resolve().parents[1] / "petab" / "tiny_problem.py")
assert _SPEC is not None and _SPEC.loader is not None
tiny = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(tiny)


@pytest.fixture()
def problem(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSODE_CACHE_DIR", str(tmp_path / "cache"))
    return tiny.write(tmp_path / "tiny")


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = cli_main.main(list(argv))
    out, _ = capsys.readouterr()
    return code, out


def test_inspect_prints_the_problem_and_its_nominal_nllh(problem, capsys):
    code, out = _run(capsys, "petab", "inspect", str(problem), "--rtol", "1e-9",
                     "--atol", "1e-11")
    assert code == 0
    assert "2 states, 2 estimated parameters, 2 simulations, 20 measurements" in out
    assert "simulation conditions: c0, c1" in out
    line = [x for x in out.splitlines() if x.startswith("negative log-likelihood")][0]
    assert float(line.split(":")[1]) == pytest.approx(tiny.nllh(tiny.K, tiny.SIGMA_B),
                                                      abs=1e-5)


def test_export_writes_observations_that_load_back(problem, tmp_path, capsys):
    out_file = tmp_path / "problem.h5"
    code, out = _run(capsys, "petab", "export", str(problem), "--out", str(out_file))
    assert code == 0 and str(out_file) in out
    system = petab.load(problem).system
    obs = physode.load_observations(out_file, system=system)
    assert [e.name for e in obs.experiments] == ["c0", "c1"]
    rows = {(o, c, t): m for o, c, t, m in tiny.data()}
    for exp in obs.experiments:
        assert list(exp.t) == list(tiny.TIMES)
        for oid in ("obs_A", "obs_B"):
            expected = [rows[(oid, exp.name, t)] for t in tiny.TIMES]
            assert list(exp.values[oid]) == pytest.approx(expected, rel=1e-12)


def test_fit_saves_a_result_file(problem, tmp_path, capsys):
    out_file = tmp_path / "fit.nc"
    code, out = _run(capsys, "petab", "fit", str(problem), "--multistart", "1",
                     "--max-iter", "1", "--rtol", "1e-6", "--atol", "1e-8",
                     "--out", str(out_file))
    assert code in (0, 3)  # converged, or stopped by --max-iter
    assert "best negative log-likelihood" in out and out_file.exists()
    best = float(out.split("best negative log-likelihood")[1].split()[0])
    lower, upper = petab.load(problem).bounds
    (start,) = draw_starts(lower, upper, 1, seed=0)  # the CLI's default seed
    at_start = tiny.nllh(10.0 ** start[0], math.exp(start[1]))  # k log10, sigma_B log
    assert best < at_start - 1.0  # one L-BFGS-B iteration went downhill from the start
    with xr.open_dataset(out_file) as ds:
        assert len(ds.data_vars) > 0
