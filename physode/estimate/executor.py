"""Independent tasks (multistart runs, profile points, chains, ensemble members) on any
:class:`concurrent.futures.Executor`.

physode schedules nothing itself: it hands tasks to an existing engine — a local process
pool, a Dask cluster (``distributed.Client(...).get_executor()``), Ray
(``ray.util.multiprocessing``-backed executors) or an MPI pool
(``mpi4py.futures.MPIPoolExecutor``) — and adds only what every long study needs on top of
``executor.submit``:

- :func:`resolve_executor`: ``None`` (serial, in this process), ``"processes"`` (a local
  spawn-context :class:`~concurrent.futures.ProcessPoolExecutor` sized to the cores, one
  torch thread per worker, workers ignoring Ctrl-C) or any ``Executor``.
- :func:`map_tasks`: ``fn`` over the tasks with a retry when a worker dies (a broken pool
  of our own is rebuilt; Dask's ``KilledWorker``, Ray's ``WorkerCrashedError`` and
  friends are retried on the same executor), one tqdm bar across all workers (tasks done,
  best objective so far), Ctrl-C that keeps every finished result, and optional streaming
  of each finished result to a store (:mod:`physode.estimate.store`) from which a resumed
  run skips finished work.
- :class:`Shared`: a large read-only argument (a system and its observations) sent to each
  worker *process* once per study: tasks carry its pickled bytes, but a worker unpickles
  (and compiles, and builds its problem) only the first time it sees it and then reuses it.

The retry rule follows the usual engines' semantics: a task that raises an ordinary
exception failed (it is not retried; the exception is raised after the finished results
were kept); a task whose *worker* disappeared (killed, out of memory, segfault) is
resubmitted, at most ``retries`` times.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import torch

from physode.errors import InvalidArgument, PhysodeError

T = TypeVar("T")
R = TypeVar("R")

#: Names of the exceptions engines raise when a task's worker died rather than the task
#: itself failing: concurrent.futures, Dask (distributed.scheduler.KilledWorker), Ray
#: (ray.exceptions.WorkerCrashedError, NodeDiedError, ActorDiedError). Matched by class
#: name so that none of those packages is imported here.
WORKER_LOST = frozenset({"BrokenProcessPool", "BrokenExecutor", "KilledWorker",
                         "WorkerCrashedError", "NodeDiedError", "ActorDiedError",
                         "OwnerDiedError"})

#: Executor names :func:`resolve_executor` understands.
EXECUTOR_NAMES = ("processes",)


class WorkerLost(PhysodeError, RuntimeError):
    """A task's worker died more often than the retries allow (or a pool we did not create
    broke); ``tasks`` lists the task indices concerned."""

    def __init__(self, message: str, tasks: list[int]) -> None:
        super().__init__(message)
        self.tasks = tasks


class TaskStore(Protocol[R]):
    """Where finished results go as they complete, and come back from on resume (see
    :class:`physode.estimate.store.StoreSection`)."""

    def done(self) -> Mapping[int, R]:
        """Finished results by task index."""
        ...

    def put(self, index: int, result: R) -> None:
        """Keep the finished result of task ``index`` (durably, before returning)."""
        ...


# ---------------------------------------------------------------------------- executors
def _init_worker(dtype: str, threads: int) -> None:
    """Initializer of physode's own pool workers: one torch thread (the pool provides the
    parallelism; more threads per worker only contend for the cores), the driver's default
    dtype, and Ctrl-C left to the driver (which cancels the work and ends the workers)."""
    torch.set_num_threads(threads)
    torch.set_default_dtype(getattr(torch, dtype))
    with contextlib.suppress(ValueError):  # not the main thread of the worker
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def process_pool(workers: int | None = None, *, threads: int = 1) -> ProcessPoolExecutor:
    """A local spawn-context process pool of ``workers`` processes (default: the usable
    cores), each with ``threads`` torch threads and this process's default dtype.

    Spawned (not forked) workers start clean: no copy of the parent's torch thread pool or
    compiled state, which fork would share unsafely."""
    n = _usable_cores() if workers is None else workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgument(f"workers must be an integer >= 1, got {workers!r}")
    dtype = str(torch.get_default_dtype()).removeprefix("torch.")
    return ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(dtype, threads))


def _usable_cores() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


def resolve_executor(executor: Executor | str | None) -> tuple[Executor | None, bool]:
    """``(executor, owned)`` for an ``executor=`` argument: ``None`` stays ``None`` (serial,
    in this process); ``"processes"`` becomes :func:`process_pool` (``owned``: the caller
    shuts it down); an :class:`~concurrent.futures.Executor` is used as given."""
    if executor is None:
        return None, False
    if isinstance(executor, str):
        if executor == "processes":
            return process_pool(), True
        raise InvalidArgument(f"unknown executor {executor!r}; give None (serial), "
                              f"'processes' or a concurrent.futures.Executor (e.g. a Dask "
                              "Client's get_executor())")
    if isinstance(executor, Executor) or (callable(getattr(executor, "submit", None))
                                          and callable(getattr(executor, "shutdown", None))):
        return executor, False
    raise InvalidArgument(f"executor must be None, 'processes' or a "
                          f"concurrent.futures.Executor, got {type(executor).__name__}")


def executor_workers(executor: Any) -> int | None:
    """How many tasks ``executor`` runs at once, where it says: a process or thread pool's
    ``max_workers``, a Dask ``Client.get_executor()``'s threads over all workers; ``None``
    for an engine that does not tell (physode then picks a fixed task count)."""
    if executor is None:
        return 1
    if isinstance(executor, str):
        return _usable_cores() if executor == "processes" else None
    n = getattr(executor, "_max_workers", None)
    if isinstance(n, int) and n > 0:
        return n
    client = getattr(executor, "_client", None)  # distributed.client.ClientExecutor
    if client is not None and callable(getattr(client, "nthreads", None)):
        with contextlib.suppress(Exception):
            total = sum(int(v) for v in client.nthreads().values())
            return total if total > 0 else None
    return None


def check_executor(executor: Any) -> None:
    """Raise :class:`InvalidArgument` for an ``executor=`` value :func:`resolve_executor`
    would refuse, without creating anything."""
    if executor is None or (isinstance(executor, str) and executor in EXECUTOR_NAMES):
        return
    if isinstance(executor, str) or not callable(getattr(executor, "submit", None)):
        resolve_executor(executor)  # raises, naming the value


# ---------------------------------------------------------------------------- shared data
_CACHE: OrderedDict[str, Shared[Any]] = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: Shared values a worker process keeps (the most recently used ones).
CACHE_SIZE = 4


class Shared(Generic[T]):
    """A read-only value sent to each worker process once: pickles as ``(token, bytes)``;
    unpickling in a process that has seen the token returns the object it already has.

    :meth:`local` gives the value and a per-thread memo (a dict where a task keeps what
    it built from the value — a compiled problem — for the next task in the same thread).
    In the thread that created it, :meth:`local` returns the original value and the memo
    given here; any other thread or process gets its own copy, unpickled once, so tasks
    never share a mutable object across threads. The value must not change after the
    first task was submitted (its bytes are taken then).
    """

    def __init__(self, value: T, **memo: Any) -> None:
        self.token = uuid.uuid4().hex
        self._payload: bytes | None = None
        self._owner: int | None = threading.get_ident()
        self._value: T | None = value
        self._memo: dict[str, Any] = dict(memo)
        self._threads: dict[int, tuple[T, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def payload(self) -> bytes:
        if self._payload is None:
            self._payload = pickle.dumps(self._value, protocol=pickle.HIGHEST_PROTOCOL)
        return self._payload

    def local(self) -> tuple[T, dict[str, Any]]:
        """``(value, memo)`` for the calling thread."""
        tid = threading.get_ident()
        if tid == self._owner and self._value is not None:
            return self._value, self._memo
        with self._lock:
            entry = self._threads.get(tid)
            if entry is None:
                entry = (pickle.loads(self.payload()), {})
                self._threads[tid] = entry
            return entry

    def __reduce__(self) -> tuple[Any, ...]:
        return (_shared_from, (self.token, self.payload()))


def _shared_from(token: str, payload: bytes) -> Shared[Any]:
    with _CACHE_LOCK:
        obj = _CACHE.get(token)
        if obj is None:
            obj = Shared.__new__(Shared)
            obj.token, obj._payload, obj._owner, obj._value = token, payload, None, None
            obj._memo, obj._threads, obj._lock = {}, {}, threading.Lock()
            _CACHE[token] = obj
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
        else:
            _CACHE.move_to_end(token)
        return obj


# ---------------------------------------------------------------------------- mapping
@dataclass
class MapResult(Generic[R]):
    """What :func:`map_tasks` finished: ``results[i]`` is task i's result, or None when it
    did not finish (the map was interrupted or stopped)."""

    results: list[R | None]
    interrupted: bool = False
    #: indices of the tasks that ran in this call (the others came from the store)
    ran: list[int] = field(default_factory=list)
    #: indices of the tasks resubmitted after their worker died
    retried: list[int] = field(default_factory=list)

    @property
    def finished(self) -> list[R]:
        """The finished results, in task order."""
        return [r for r in self.results if r is not None]

    @property
    def complete(self) -> bool:
        return all(r is not None for r in self.results)


def _call(fn: Callable[[Any], R], task: Any, index: int, attempt: int, dtype: str) -> R:
    """Run one task in a worker (``index`` and ``attempt`` make every submission distinct,
    so engines that cache by arguments — Dask's pure tasks — really run a retry)."""
    torch.set_default_dtype(getattr(torch, dtype))
    return fn(task)


def _lost(exc: BaseException) -> bool:
    return any(cls.__name__ in WORKER_LOST for cls in type(exc).__mro__)


class _Progress:
    """One bar across all workers: tasks done and the best objective so far."""

    def __init__(self, enabled: bool, total: int, initial: int, desc: str) -> None:
        self.bar: Any = None
        self.best = math.inf
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, file=sys.stderr,
                            dynamic_ncols=True, leave=False)

    def update(self, value: float | None) -> None:
        if value is not None and math.isfinite(value) and value < self.best:
            self.best = value
        if self.bar is not None:
            self.bar.update(1)
            if math.isfinite(self.best):
                self.bar.set_postfix(best=f"{self.best:.6g}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def map_tasks(fn: Callable[[T], R], tasks: Iterable[T], executor: Executor | str | None = None,
              *, store: TaskStore[R] | None = None, progress: bool = False, retries: int = 1,
              desc: str = "tasks", score: Callable[[R], float] | None = None,
              stop: Callable[[R], bool] | None = None) -> MapResult[R]:
    """Run ``fn(task)`` for every task on ``executor`` and collect the results in task order.

    Args:
        fn: a picklable (module-level) function of one task; it runs in a worker.
        tasks: the tasks (picklable); wrap large read-only parts in :class:`Shared`.
        executor: None (serial, here), ``"processes"`` (a local pool created and shut
            down here) or any :class:`concurrent.futures.Executor` (left running).
        store: finished results are ``store.put(i, result)`` as they complete, in this
            process; tasks ``store.done()`` already holds are not run again (resume).
        progress: one tqdm bar (tasks done, and the best ``score`` so far).
        retries: how often a task whose worker died is resubmitted (>= 0).
        desc: the bar's label and the name used in messages.
        score: the objective of a result for the bar (lower is better).
        stop: a finished result for which ``stop(result)`` is true ends the map as Ctrl-C
            does (the result is kept, pending tasks are cancelled).

    Returns:
        :class:`MapResult`; ``interrupted`` is True after Ctrl-C or ``stop``. Results
        finished before are kept in both cases.

    Raises:
        WorkerLost: a task's worker died more than ``retries`` times, or a pool physode
            did not create broke (it cannot be rebuilt here).
        Exception: the first exception a task raised (finished results were stored).
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidArgument(f"retries must be an integer >= 0, got {retries!r}")
    items = list(tasks)
    results: list[R | None] = [None] * len(items)
    if store is not None:
        for i, r in store.done().items():
            if 0 <= i < len(items):
                results[i] = r
    todo = [i for i in range(len(items)) if results[i] is None]
    out = MapResult(results)
    bar = _Progress(progress, len(items), len(items) - len(todo), desc)
    if score is not None:  # the bar's best includes what the store already holds
        bar.best = min([bar.best, *(score(r) for r in out.finished)])

    def finish(i: int, r: R) -> bool:
        results[i] = r
        out.ran.append(i)
        if store is not None:
            store.put(i, r)
        bar.update(score(r) if score is not None else None)
        return stop is not None and bool(stop(r))

    try:
        if executor is None:
            _serial(fn, items, todo, finish, out)
        else:
            pool, owned = resolve_executor(executor)
            assert pool is not None
            _parallel(fn, items, todo, finish, out, pool, owned, retries, desc)
    finally:
        bar.close()
    return out


def _serial(fn: Callable[[Any], R], items: list[Any], todo: list[int],
            finish: Callable[[int, R], bool], out: MapResult[R]) -> None:
    for i in todo:
        try:
            r = fn(items[i])
        except KeyboardInterrupt:
            out.interrupted = True
            return
        if finish(i, r):
            out.interrupted = True
            return


def _parallel(fn: Callable[[Any], R], items: list[Any], todo: list[int],
              finish: Callable[[int, R], bool], out: MapResult[R], pool: Executor,
              owned: bool, retries: int, desc: str) -> None:
    dtype = str(torch.get_default_dtype()).removeprefix("torch.")
    attempts = dict.fromkeys(todo, 0)
    pending: dict[Future[R], int] = {}

    def submit(i: int) -> None:
        pending[pool.submit(_call, fn, items[i], i, attempts[i], dtype)] = i

    try:
        for i in todo:
            submit(i)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            lost: list[int] = []
            broken = False
            for fut in done:
                i = pending.pop(fut)
                try:
                    r = fut.result()
                except BaseException as exc:
                    if not _lost(exc):
                        raise
                    broken = broken or isinstance(exc, BrokenProcessPool)
                    lost.append(i)
                    continue
                if finish(i, r):
                    out.interrupted = True
                    return
            if not lost:
                continue
            if broken:  # every task still in the pool is lost with it
                lost += list(pending.values())
                pending.clear()
                if not owned:
                    raise WorkerLost(f"{desc}: the process pool broke (a worker died) and it "
                                     "is not physode's to rebuild; pass executor='processes' "
                                     "or an engine that reschedules (Dask)", sorted(lost))
                _terminate(pool)
                pool = _rebuilt(pool)
            for i in sorted(lost):
                attempts[i] += 1
                out.retried.append(i)
            over = sorted(i for i in lost if attempts[i] > retries)
            if over:
                raise WorkerLost(f"{desc}: the worker of task(s) {over} died {retries + 1} "
                                 "time(s); giving up on them (a worker that cannot even start "
                                 "counts too: a script that starts a process pool needs "
                                 "`if __name__ == '__main__':`)", over)
            for i in sorted(lost):
                submit(i)
    except KeyboardInterrupt:
        out.interrupted = True
    finally:
        for fut in pending:
            fut.cancel()
        if owned:
            if pending or out.interrupted:
                _terminate(pool)
            else:
                pool.shutdown(wait=True)


def _rebuilt(pool: Executor) -> Executor:
    """A fresh pool like the broken one (physode's own pools only)."""
    assert isinstance(pool, ProcessPoolExecutor)
    init = getattr(pool, "_initargs", None)
    threads = int(init[1]) if init else 1
    return process_pool(getattr(pool, "_max_workers", None), threads=threads)


def _terminate(pool: Executor) -> None:
    """Shut a pool down now: cancel what is queued and end the workers still running
    (Python < 3.14 has no public call for that, so the processes are ended directly)."""
    procs = list(dict(getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=5)


__all__ = ["CACHE_SIZE", "EXECUTOR_NAMES", "WORKER_LOST", "MapResult", "Shared", "TaskStore",
           "WorkerLost", "check_executor", "executor_workers",
           "map_tasks", "process_pool", "resolve_executor"]
