"""simulate_ensemble: a labelled sample dimension, the same numbers on any executor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import physode
import systems
from physode.errors import InvalidArgument


def test_ensemble_matches_single_solves_and_is_labelled() -> None:
    system = systems.get("pendulum", damping=0.1)
    lengths = np.array([0.5, 1.0, 2.0])
    t = np.linspace(0.0, 1.0, 5)
    ds = physode.simulate_ensemble(system, {"length": lengths}, t, chunk_size=2,
                                   rtol=1e-8, atol=1e-10)
    assert ds["theta"].dims == ("sample", "time")
    assert ds["theta"].attrs["units"] == "rad" and ds["time"].attrs["units"] == "s"
    np.testing.assert_array_equal(ds["parameter_length"].values, lengths)
    assert list(ds["failure"].values) == ["", "", ""]
    for k, L in enumerate(lengths):
        one = systems.get("pendulum", damping=0.1, length=float(L))
        ys = physode.odeint(one, one.y0, torch.as_tensor(t), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(ds["theta"].values[k], ys[:, 0].detach().numpy(), rtol=1e-12)
    # the caller's system is untouched
    assert float(system.params["length"]) == 1.0


def test_ensemble_on_threads_equals_serial_and_failures_are_per_sample() -> None:
    from concurrent.futures import ThreadPoolExecutor

    system = systems.get("pendulum")
    sets = [{"length": 1.0, "damping": 0.0}, {"length": -1.0, "damping": 0.0},
            {"length": 3.0, "damping": 0.2}]
    y0 = np.array([[0.5, 0.0], [0.5, 0.0], [1.0, 0.0]])
    t = np.linspace(0.0, 2.0, 4)
    serial = physode.simulate_ensemble(system, sets, t, y0=y0, chunk_size=1)
    with ThreadPoolExecutor(2) as pool:
        threaded = physode.simulate_ensemble(system, sets, t, pool, y0=y0, chunk_size=1)
    np.testing.assert_array_equal(serial["theta"].values, threaded["theta"].values)
    assert serial["failure"].values[1] and "length" in serial["failure"].values[1]
    assert np.isnan(serial["theta"].values[1]).all()
    assert serial.attrs["n_failed"] == 1


def test_bad_parameter_sets_are_named() -> None:
    system = systems.get("pendulum")
    with pytest.raises(InvalidArgument, match="no parameter 'mass'"):
        physode.simulate_ensemble(system, {"mass": [1.0]}, [0.0, 1.0])
    with pytest.raises(InvalidArgument, match="same number"):
        physode.simulate_ensemble(system, {"length": [1.0, 2.0], "damping": [0.1]},
                                  [0.0, 1.0])
    with pytest.raises(InvalidArgument, match=r"parameter_sets\[0\] has no value for 'damping'"):
        physode.simulate_ensemble(system, [{"length": 1.0}, {"damping": 0.1}], [0.0, 1.0])
    with pytest.raises(InvalidArgument, match="y0 of shape"):
        physode.simulate_ensemble(system, {"length": [1.0]}, [0.0, 1.0], y0=[1.0, 2.0, 3.0])
