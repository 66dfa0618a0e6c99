"""Data-parallel fits: two gloo ranks (spawned here) give the single-process estimate."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import physode
import systems
from physode.errors import InvalidArgument
from physode.estimate.distributed import DistributedProblem, shard, world

FIT = dict(optimizer="lm", rtol=1e-6, atol=1e-8, progress=False, compile=False)


def _data() -> physode.Observations:
    """Four pendulums released from different angles, each observed on its own times (so
    each is its own solve: splitting a batched solve would change its shared steps)."""
    truth = systems.get("pendulum", length=1.2, damping=0.15)
    exps = []
    for k, theta0 in enumerate(np.linspace(0.3, 1.2, 4)):
        t = np.linspace(0.0, 1.5 + 0.1 * k, 6)
        one = physode.simulate(truth, t, y0=[theta0, 0.0], noise=0.01, seed=k,
                               experiment_names=[f"release{k}"])
        exps += one.experiments
    return replace(one, experiments=exps)


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    res = physode.fit(systems.get("pendulum", length=1.0, damping=0.3), _data(), **FIT)
    assert world() == (rank, 2)
    np.save(Path(out) / f"rank{rank}.npy", np.concatenate([res.values, [res.chi2],
                                                           res.stderr["length"].reshape(-1)]))
    from physode.estimate.distributed import shutdown

    shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_ranks_give_the_single_process_fit(tmp_path: Path) -> None:
    single = physode.fit(systems.get("pendulum", length=1.0, damping=0.3), _data(), **FIT)
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (np.load(tmp_path / f"rank{k}.npy") for k in (0, 1))
    np.testing.assert_array_equal(r0, r1)  # every rank holds the same bits
    want = np.concatenate([single.values, [single.chi2], single.stderr["length"].reshape(-1)])
    np.testing.assert_allclose(r0, want, rtol=1e-8)
    assert single.success


def test_shards_are_contiguous_and_balanced() -> None:
    parts = [shard(7, k, 3) for k in range(3)]
    assert parts == [[0, 1, 2], [3, 4], [5, 6]]
    assert shard(1, 1, 2) == []


def test_unsupported_objectives_are_refused(monkeypatch) -> None:
    sys_ = systems.get("pendulum")
    sys_.set_initial_state(unknown=["theta"])
    obs = _data()
    physode.estimate.problem.prepare_initial_states(sys_, obs)
    monkeypatch.setattr("physode.estimate.distributed.world", lambda: (0, 2))
    with pytest.raises(InvalidArgument, match="fitted initial states"):
        DistributedProblem(sys_, obs)
