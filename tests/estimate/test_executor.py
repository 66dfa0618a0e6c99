"""map_tasks on the serial path and physode's own process pool: order, retries after a
worker dies, stop/Ctrl-C keeping finished results, the store, and Shared reuse."""

from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import physode.estimate.executor as executor_module
from physode.errors import InvalidArgument
from physode.estimate.executor import (
    MapResult,
    Shared,
    WorkerLost,
    check_executor,
    map_tasks,
    process_pool,
    resolve_executor,
)
from physode.estimate.store import ResultStore


@pytest.fixture(scope="module")
def pool():
    """One two-worker pool for the tests that do not need a pool of physode's own (each
    spawned worker imports torch: seconds on a loaded 2-core machine)."""
    with process_pool(2) as p:
        yield p


@pytest.fixture
def one_core(monkeypatch):
    """executor='processes' sized to one worker: the retry tests need pools of physode's
    own, and one worker each keeps them fast."""
    monkeypatch.setattr(executor_module, "_usable_cores", lambda: 1)


@dataclass
class Square:
    index: int
    value: float
    pid: int


def square(task: tuple[int, float]) -> Square:
    i, x = task
    return Square(i, x * x, os.getpid())


def die_once(task: tuple[int, str]) -> int:
    """Kills its own worker process the first time task 2 runs (a marker file remembers)."""
    i, marker = task
    if i == 2 and not os.path.exists(marker):
        Path(marker).write_text("died")
        os._exit(3)
    return i * 10


def always_die(task: int) -> int:
    os._exit(4)


def shared_ids(task: tuple[Shared[list[int]], int]) -> tuple[int, int, int]:
    """(pid, id of the shared value in this worker, how many tasks this worker's memo saw)."""
    shared, _ = task
    value, memo = shared.local()
    memo["n"] = memo.get("n", 0) + 1
    return os.getpid(), id(value), memo["n"]


def fail_on_three(task: int) -> int:
    if task == 3:
        raise ValueError("task three is broken")
    return task


def test_serial_map_keeps_order_and_scores() -> None:
    out = map_tasks(square, [(i, float(i)) for i in range(5)], None, score=lambda r: -r.value)
    assert isinstance(out, MapResult) and out.complete and not out.interrupted
    assert [r.value for r in out.finished] == [0.0, 1.0, 4.0, 9.0, 16.0]
    assert out.ran == [0, 1, 2, 3, 4]
    assert {r.pid for r in out.finished} == {os.getpid()}


def test_processes_map_equals_serial_and_uses_other_processes(pool) -> None:
    tasks = [(i, 0.5 * i) for i in range(6)]
    par = map_tasks(square, tasks, pool)
    ser = map_tasks(square, tasks, None)
    assert [r.value for r in par.finished] == [r.value for r in ser.finished]
    assert os.getpid() not in {r.pid for r in par.finished}


def test_a_dead_worker_is_retried_once_on_a_rebuilt_pool(tmp_path: Path, one_core) -> None:
    marker = str(tmp_path / "died")
    out = map_tasks(die_once, [(i, marker) for i in range(5)], "processes", retries=1)
    assert out.complete
    assert out.finished == [0, 10, 20, 30, 40]
    assert 2 in out.retried and Path(marker).exists()


def test_a_worker_that_always_dies_gives_up_after_the_retries(one_core) -> None:
    with pytest.raises(WorkerLost, match="died 2 time") as info:
        map_tasks(always_die, [0], "processes", retries=1)
    assert info.value.tasks == [0]


def test_a_broken_pool_we_did_not_create_is_reported(tmp_path: Path) -> None:
    pool = process_pool(1)
    try:
        with pytest.raises(WorkerLost, match="not physode's to rebuild"):
            map_tasks(die_once, [(2, str(tmp_path / "m"))], pool)
    finally:
        pool.shutdown()


def test_task_errors_propagate_after_finished_results_are_stored(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "runs.h5").section("sq", Square)
    with pytest.raises(ValueError, match="task three"):
        map_tasks(lambda t: square((t, float(t))) if t != 3 else fail_on_three(t),
                  range(5), None, store=store)
    assert sorted(store.done()) == [0, 1, 2]


def test_stop_keeps_finished_results_and_resume_skips_them(tmp_path: Path, pool) -> None:
    path = tmp_path / "runs.h5"
    tasks = [(i, float(i)) for i in range(6)]
    first = map_tasks(square, tasks, None, store=ResultStore(path).section("sq", Square),
                      stop=lambda r: r.index == 2)
    assert first.interrupted and first.ran == [0, 1, 2]
    assert [r is None for r in first.results] == [False] * 3 + [True] * 3
    section = ResultStore(path, resume=True).section("sq", Square)
    second = map_tasks(square, tasks, pool, store=section)
    assert second.complete and sorted(second.ran) == [3, 4, 5]
    assert [r.value for r in second.finished] == [float(i * i) for i in range(6)]
    # the first three came back from the file, computed in this process
    assert {r.pid for r in second.finished[:3]} == {os.getpid()}


def test_keyboard_interrupt_in_a_serial_task_keeps_finished_results() -> None:
    def task(i: int) -> int:
        if i == 2:
            raise KeyboardInterrupt
        return i

    out = map_tasks(task, range(4), None)
    assert out.interrupted and out.results == [0, 1, None, None]


def test_shared_value_is_unpickled_once_per_worker_and_per_thread(pool) -> None:
    shared = Shared([1, 2, 3])
    value, memo = shared.local()
    assert value == [1, 2, 3] and memo == {}
    # in this thread: the original object
    assert shared_ids((shared, 0))[1] == id(shared.local()[0])
    out = map_tasks(shared_ids, [(shared, i) for i in range(6)], pool)
    by_pid: dict[int, list[tuple[int, int, int]]] = {}
    for r in out.finished:
        by_pid.setdefault(r[0], []).append(r)
    for rows in by_pid.values():  # one object per worker, its memo seeing each task
        assert len({r[1] for r in rows}) == 1
        assert sorted(r[2] for r in rows) == list(range(1, len(rows) + 1))
    # threads get their own copies, never the creator's object
    with ThreadPoolExecutor(2) as threads:
        out = map_tasks(shared_ids, [(shared, i) for i in range(4)], threads)
    assert id(value) not in {r[1] for r in out.finished}
    # unpickling in the same process twice gives the same object
    a = pickle.loads(pickle.dumps(shared))
    assert pickle.loads(pickle.dumps(shared)) is a and a.local()[0] == [1, 2, 3]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InvalidArgument, match="unknown executor 'threads'"):
        resolve_executor("threads")
    with pytest.raises(InvalidArgument, match="executor must be"):
        check_executor(3)
    check_executor("processes")
    with pytest.raises(InvalidArgument, match="retries"):
        map_tasks(square, [], None, retries=-1)
    with pytest.raises(InvalidArgument, match="workers"):
        process_pool(0)
    assert resolve_executor(None) == (None, False)


def test_map_of_nothing_is_empty(one_core) -> None:
    out = map_tasks(square, [], "processes")
    assert out.results == [] and out.complete and out.ran == []
