"""FitResult exports (xarray, netCDF, plots) and the `physode fit` / `physode demo` CLI."""

from __future__ import annotations

import numpy as np
import pytest

import physode
import systems
from physode.cli.main import main

FAST = {"progress": False, "compile": False, "rtol": 1e-7, "atol": 1e-9}


@pytest.fixture(scope="module")
def pendulum_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pend.h5"
    truth = systems.get("pendulum", damping=0.3)
    obs = physode.simulate(truth, np.linspace(0, 3, 31), observe=["theta"], noise=0.01, seed=5)
    physode.save_observations(obs, path)
    return path


@pytest.fixture(scope="module")
def pendulum_fit(pendulum_file):
    system = systems.get("pendulum", length=1.2, damping=0.1)
    return physode.fit(system, pendulum_file, optimizer="lm", **FAST)


def test_to_xarray_and_save_round_trip(pendulum_fit, tmp_path):
    res = pendulum_fit
    ds = res.to_xarray()
    for name in ["theta_observed", "theta_fitted", "theta_residual", "theta_sigma",
                 "theta_fine", "omega_fine", "estimate", "stderr", "covariance",
                 "correlation", "chi2_history"]:
        assert name in ds, name
    np.testing.assert_allclose(ds["theta_residual"], ds["theta_observed"] - ds["theta_fitted"])
    assert list(ds["parameter"].values) == ["length", "damping"]
    np.testing.assert_allclose(ds["estimate"], res.values)
    assert ds.attrs["solver_method"] == "dopri5" and ds.attrs["rtol"] == 1e-7
    assert "torch_version" in ds.attrs and ds["theta_observed"].attrs["units"] == "rad"
    out = tmp_path / "fit.nc"
    res.save(out)
    back = physode.read_netcdf(out)
    for name in ds.data_vars:
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    assert back.attrs["stop_reason"] == res.stop_reason
    assert list(back["parameter_units"].values) == ["m", "1/s"]


def test_plot_writes_png(pendulum_fit, tmp_path):
    out = tmp_path / "fit.png"
    pendulum_fit.plot(out)
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_cli_fit(pendulum_file, tmp_path, capsys):
    out, png = tmp_path / "r" / "fit.nc", tmp_path / "fit.png"
    status = main(["fit", "pendulum", str(pendulum_file), "--out", str(out), "--plot", str(png),
                   "--optimizer", "lm", "--set", "length=1.2", "--no-progress",
                   "--compile", "off", "--rtol", "1e-7", "--atol", "1e-9"])
    assert status == 0
    assert out.exists() and png.exists()
    text = capsys.readouterr().out
    assert "[[Variables]]" in text and "length" in text


def test_cli_fit_user_errors(pendulum_file, tmp_path, capsys):
    out = str(tmp_path / "x.nc")
    assert main(["fit", "pendulum", str(tmp_path / "missing.h5"), "--out", out]) == 2
    assert main(["fit", "pendulum", str(pendulum_file), "--out", out,
                 "--optimizer", "newton"]) == 2
    assert main(["fit", "no-such-system", str(pendulum_file), "--out", out]) == 2
    assert main(["fit", "pendulum", str(pendulum_file), "--out", out,
                 "--max-iter", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("physode: error:") == 4


def test_cli_demo_on_tiny_data(tmp_path, capsys):
    truth = systems.get("three-body-paper")
    obs = physode.simulate(truth, np.linspace(0, 0.1, 11), observe=["position"], seed=0)
    data = tmp_path / "tiny.h5"
    physode.save_observations(obs, data)
    status = main(["demo", "--data", str(data), "--out-dir", str(tmp_path / "res"),
                   "--compile", "off", "--no-progress", "--rtol", "1e-6", "--atol", "1e-8",
                   "--max-iter", "30"])
    assert status == 0
    assert (tmp_path / "res" / "three_body_fit.nc").exists()
    assert (tmp_path / "res" / "three_body_fit.png").exists()
    assert "relative error of the masses" in capsys.readouterr().out


def test_cli_fit_interrupted_saves(pendulum_file, tmp_path, monkeypatch):
    from physode.estimate import optimizers

    original = optimizers.Tracker.iteration

    def interrupt(self, chi2, gnorm):
        original(self, chi2, gnorm)
        if self.niter == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(optimizers.Tracker, "iteration", interrupt)
    out = tmp_path / "int.nc"
    status = main(["fit", "pendulum", str(pendulum_file), "--out", str(out), "--no-progress",
                   "--compile", "off", "--set", "length=1.2"])
    assert status == 130
    back = physode.read_netcdf(out)
    assert back.attrs["interrupted"] == 1
