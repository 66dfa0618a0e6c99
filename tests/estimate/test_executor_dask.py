"""map_tasks and fit on a real Dask cluster (two worker processes): same results as
serial, and a worker killed mid-task costs only a retry."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import physode
import systems
from physode.estimate.executor import map_tasks

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")
# the workers cannot import this test module: send its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def executor():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client.get_executor()


def die_once(task: tuple[int, str]) -> tuple[int, int]:
    i, marker = task
    if i == 1 and not os.path.exists(marker):
        Path(marker).write_text("died")
        os._exit(3)
    return i, os.getpid()


def test_dask_reschedules_a_task_whose_worker_died(executor, tmp_path: Path) -> None:
    marker = str(tmp_path / "died")
    out = map_tasks(die_once, [(i, marker) for i in range(4)], executor)
    assert out.complete and [r[0] for r in out.finished] == [0, 1, 2, 3]
    assert Path(marker).exists()
    assert os.getpid() not in {r[1] for r in out.finished}


def test_multistart_on_dask_equals_serial(executor, tmp_path: Path) -> None:
    truth = systems.get("pendulum", length=1.2, damping=0.15)
    obs = physode.simulate(truth, np.linspace(0.0, 2.0, 8), noise=0.01, seed=2)
    kw = dict(optimizer="lm", multistart=2, rtol=1e-6, atol=1e-8, compile=False,
              progress=False)
    serial = physode.fit(systems.get("pendulum"), obs, **kw)
    store = tmp_path / "runs.h5"
    dask = physode.fit(systems.get("pendulum"), obs, executor=executor, store=store, **kw)
    np.testing.assert_array_equal(dask.values, serial.values)
    assert [s["chi2"] for s in dask.starts] == [s["chi2"] for s in serial.starts]
    ens = physode.simulate_ensemble(truth, {"length": [1.0, 1.5]}, [0.0, 0.5, 1.0], executor)
    assert ens["theta"].shape == (2, 3)
