"""Labelled xarray output of solutions and observations, and the netCDF round trip."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import physode
import systems
from physode import Experiment, Observations
from physode.ode.loop import Stats
from physode.ode.solve import Solution


def _known_solution(n_exp: int = 2) -> tuple[Solution, np.ndarray]:
    """A Solution whose every entry is known: ys[k, e, i] = 1000 k + 100 e + i."""
    ts = torch.linspace(0.0, 1.0, 4)
    k, e, i = np.meshgrid(np.arange(4), np.arange(n_exp), np.arange(18), indexing="ij")
    ys = (1000.0 * k + 100.0 * e + i).astype(np.float64)
    return Solution(ts=ts, ys=torch.as_tensor(ys), stats=Stats()), ys


def test_known_solution_has_the_right_dims_coords_units_and_values() -> None:
    system = systems.get("three-body-paper")
    sol, ys = _known_solution()
    ds = physode.to_xarray(sol, system=system)
    assert set(ds.data_vars) == {"position", "velocity"}
    for name in ("position", "velocity"):
        assert ds[name].dims == ("experiment", "time", "body", "axis")
        assert ds[name].shape == (2, 4, 3, 3)
        assert ds[name].dtype == np.float64
    assert ds["experiment"].values.tolist() == ["exp0", "exp1"]
    assert ds["body"].values.tolist() == [0, 1, 2]
    assert ds["axis"].values.tolist() == ["x", "y", "z"]
    np.testing.assert_array_equal(ds["time"].values, sol.ts.numpy())
    assert ds["time"].attrs["units"] == system.time_units
    assert ds["position"].attrs["units"] == system.layout.by_name["position"].units
    assert ds["velocity"].attrs["units"] == system.layout.by_name["velocity"].units
    # position of body b, axis a is flat index 3 b + a; velocity follows at offset 9
    pos = ds["position"].sel(experiment="exp1", body=2, axis="y").values
    np.testing.assert_array_equal(pos, ys[:, 1, 3 * 2 + 1])
    vel = ds["velocity"].sel(experiment="exp0", body=1, axis="z").values
    np.testing.assert_array_equal(vel, ys[:, 0, 9 + 3 * 1 + 2])
    assert ds.attrs["system"] == "three-body-paper"
    np.testing.assert_array_equal(ds.attrs["parameter_masses"], [1.1, 1.1, 0.9])
    assert ds.attrs["parameter_G"] == pytest.approx(float(system.G))
    assert ds.attrs["parameter_masses_units"] == system.parameter_specs()["masses"].units


def test_solved_trajectory_and_scalar_state() -> None:
    system = systems.get("pendulum")
    t = torch.linspace(0.0, 1.0, 6)
    with torch.no_grad():
        sol = physode.solve(system, system.y0, t)
    ds = physode.to_xarray(sol, system=system)
    assert ds["theta"].dims == ("experiment", "time") and ds.sizes["experiment"] == 1
    np.testing.assert_array_equal(ds["theta"].values[0], sol.ys[:, 0].numpy())
    np.testing.assert_array_equal(ds["omega"].values[0], sol.ys[:, 1].numpy())
    assert ds["theta"].attrs["units"] == "rad" and ds["omega"].attrs["units"] == "rad/s"
    assert ds.attrs["parameter_g"] == pytest.approx(9.80665)
    assert ds.attrs["parameter_g_units"] == "m/s^2"
    with pytest.raises(physode.InvalidArgument):
        physode.to_xarray(sol)
    with pytest.raises(physode.InvalidArgument):
        physode.data.labelled.solution_to_xarray(t, torch.zeros(6, 3), system)


def test_solution_netcdf_round_trip_is_identical(tmp_path: Path) -> None:
    system = systems.get("three-body-paper")
    sol, _ = _known_solution()
    ds = physode.to_xarray(sol, system=system)
    path = tmp_path / "sol.nc"
    physode.write_netcdf(ds, path)
    back = physode.read_netcdf(path)
    xr.testing.assert_identical(back, ds)
    with xr.open_dataset(path, engine="h5netcdf") as raw:  # plain xarray reads it too
        xr.testing.assert_identical(raw.load(), ds)


def _mixed_observations() -> Observations:
    """Two experiments on different time grids, partial components, a masked point."""
    v0 = np.array([[1.0, 2.0], [np.nan, 4.0], [5.0, 6.0]])
    m0 = np.isnan(v0)
    e0 = Experiment(t=[0.0, 1.0, 2.0], values={"concentration": v0},
                    index={"concentration": {"species": [0, 3]}},
                    mask={"concentration": m0}, sigma={"concentration": 0.5}, name="a")
    e1 = Experiment(t=[0.5, 1.0], values={"concentration": np.array([[7.0], [8.0]])},
                    index={"concentration": {"species": [3]}}, name="b",
                    y0={"concentration": [50.0, 10.0, 0.0, 0.0]})
    return Observations(system="michaelis-menten", experiments=[e0, e1],
                        units={"concentration": "mM"}, time_units="min",
                        parameters={"kf": 0.01, "kr": 0.1, "kcat": 0.1},
                        parameter_units={"kf": "1/(mM min)"}, metadata={"lab": "B12",
                                                                         "blind": True})


def test_observations_to_xarray_labels_and_fills() -> None:
    ds = physode.to_xarray(_mixed_observations())
    c = ds["concentration"]
    assert c.dims == ("experiment", "time", "species")
    assert ds["experiment"].values.tolist() == ["a", "b"]
    assert ds["species"].values.tolist() == ["S", "P"]
    np.testing.assert_array_equal(ds["time"].values, [0.0, 0.5, 1.0, 2.0])
    assert ds["time"].attrs["units"] == "min" and c.attrs["units"] == "mM"
    a = c.sel(experiment="a")
    np.testing.assert_array_equal(a.sel(species="S").values, [1.0, np.nan, np.nan, 5.0])
    np.testing.assert_array_equal(a.sel(species="P").values, [2.0, np.nan, 4.0, 6.0])
    b = c.sel(experiment="b")
    np.testing.assert_array_equal(b.sel(species="P").values, [np.nan, 7.0, 8.0, np.nan])
    assert np.all(np.isnan(b.sel(species="S").values))
    s = ds["concentration_sigma"].sel(experiment="a", species="P").values
    np.testing.assert_array_equal(s, [0.5, np.nan, 0.5, 0.5])
    assert ds.attrs["system"] == "michaelis-menten" and ds.attrs["parameter_kf"] == 0.01
    assert ds.attrs["parameter_kf_units"] == "1/(mM min)"
    assert ds.attrs["lab"] == "B12" and ds.attrs["blind"] == 1


def test_observations_netcdf_round_trip_is_identical(tmp_path: Path) -> None:
    for obs in (_mixed_observations(),
                physode.simulate("pendulum", np.linspace(0, 1, 5), noise=0.01,
                                 relative_noise=True, rtol=1e-7, atol=1e-9)):
        ds = physode.to_xarray(obs)
        path = tmp_path / "obs.nc"
        physode.write_netcdf(ds, path)
        xr.testing.assert_identical(physode.read_netcdf(path), ds)


def test_interrupted_netcdf_write_leaves_previous_file(tmp_path: Path, monkeypatch) -> None:
    system = systems.get("three-body-paper")
    sol, _ = _known_solution()
    first = physode.to_xarray(sol, system=system)
    path = tmp_path / "fit.nc"
    physode.write_netcdf(first, path)
    before = path.read_bytes()
    real = xr.Dataset.to_netcdf

    def failing(self, target, *args, **kwargs):
        real(self.isel(time=slice(0, 1)), target, *args, **kwargs)  # something on disk
        raise OSError("no space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", failing)
    with pytest.raises(OSError, match="no space"):
        physode.write_netcdf(first * 2, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["fit.nc"]
