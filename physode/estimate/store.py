"""The results store: finished work of a long study (multistart runs, profile points,
sample chunks) streamed to one HDF5 file as it completes, so that nothing finished is lost
when the run dies and ``--resume`` skips it.

Layout (h5py)::

    runs.h5
      /<section>                attrs: study (JSON: what the work is; checked on resume),
                                       record_type (the dataclass name, for people)
      /<section>/000017         one group per finished task (index 17): attrs["fields"]
                                (JSON: the record's scalars, strings, lists, None), one
                                dataset per numpy-array field

Every write is atomic (:func:`physode.data.atomic.atomic_path`): the file is copied next to
itself, the record added, the copy flushed to disk and renamed over the file. A process
killed at any moment (``kill -9``, wall-time limit, power loss) therefore leaves either the
previous complete file or the new complete one — HDF5 itself gives no such guarantee for a
file being written in place. The copy costs O(file size) per record: a few milliseconds for
the hundreds of kilobytes of a 1000-start study (measured in docs/scaling.md); chunk
very fine-grained work (many samples per record) to keep it small.

Records are reconstructed as ``record_type(**fields)`` from a type the *caller* names;
nothing read from the file is ever imported or unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from physode.data.atomic import atomic_path
from physode.errors import InvalidArgument

R = TypeVar("R")

#: Digits of a record's group name (task indices below 10**6 sort as strings).
INDEX_DIGITS = 6


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON-encodable data (numpy scalars and arrays become numbers/lists)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise InvalidArgument(f"{where}: cannot store a {type(value).__name__} (numbers, strings, "
                          "None, lists, dicts and numpy arrays only)")


def _study_json(study: Mapping[str, Any]) -> str:
    return json.dumps(_jsonable(dict(study), "study"), sort_keys=True)


class ResultStore:
    """One HDF5 results file; :meth:`section` gives the part a kind of work writes to.

    Args:
        path: the file (created on the first record).
        resume: continue a section that already holds records. Without it, a section with
            records is refused (an earlier study's results are never mixed into a new
            one by accident).
        write: False makes :meth:`StoreSection.put` a no-op (the other ranks of a
            data-parallel run read the store; rank 0 writes it).
    """

    def __init__(self, path: str | os.PathLike[str], *, resume: bool = False,
                 write: bool = True) -> None:
        self.path = Path(os.fspath(path))
        self.resume = bool(resume)
        self.write = bool(write)
        if self.path.exists() and not self.path.is_file():
            raise InvalidArgument(f"results store {self.path}: not a regular file")
        if self.path.exists():
            self._read(lambda f: None)  # a file that is not HDF5 is refused now

    def _read(self, fn: Callable[[Any], R]) -> R:
        import h5py

        try:
            with h5py.File(self.path, "r", locking=False) as f:
                return fn(f)
        except OSError as exc:
            raise InvalidArgument(f"results store {self.path}: cannot read it as HDF5 "
                                  f"({exc})") from None

    def sections(self) -> list[str]:
        """The sections the file holds."""
        if not self.path.exists():
            return []
        return self._read(lambda f: sorted(f.keys()))

    def section(self, name: str, record_type: type[R], study: Mapping[str, Any] | None = None,
                *, skip: Callable[[R], bool] | None = None) -> StoreSection[R]:
        """The section ``name`` holding ``record_type`` records (a flat dataclass whose
        fields are numbers, strings, None, lists, dicts or numpy arrays).

        ``study`` describes the work (settings, sizes, seed): a resumed section must have
        been written for the same study, else :class:`InvalidArgument` names the first
        entry that differs. Without ``study`` the section is opened to read it (nothing is
        compared, and records written keep the stored description). Results for which
        ``skip(result)`` is true are not stored (e.g. a run that was interrupted, to be
        redone on resume).
        """
        if not name or "/" in name:
            raise InvalidArgument(f"results store section name {name!r}: give a non-empty "
                                  "name without '/'")
        if not dataclasses.is_dataclass(record_type):
            raise InvalidArgument(f"record_type must be a dataclass, got {record_type!r}")
        section: StoreSection[R] = StoreSection(
            self, name, record_type, None if study is None else dict(study), skip)
        section.check()
        return section


class StoreSection(Generic[R]):
    """One kind of work in a :class:`ResultStore`; a :class:`~physode.estimate.executor.
    TaskStore` for :func:`~physode.estimate.executor.map_tasks`."""

    def __init__(self, store: ResultStore, name: str, record_type: type[R],
                 study: dict[str, Any] | None, skip: Callable[[R], bool] | None) -> None:
        self.store, self.name, self.record_type = store, name, record_type
        self.study = study
        self.skip = skip
        self._fields = {f.name for f in dataclasses.fields(record_type)}  # type: ignore[arg-type]

    @property
    def where(self) -> str:
        return f"results store {self.store.path} [{self.name}]"

    def check(self) -> None:
        """Refuse a section that holds records of another study, or any records when not
        resuming."""
        stored = self._stored_study()
        if stored is None:
            return
        if self.study is None:  # opened to read
            return
        n = len(self.done())
        if n and not self.store.resume:
            raise InvalidArgument(f"{self.where} already holds {n} finished record(s); resume "
                                  "them (--resume / resume=True) or give another file")
        mine = json.loads(_study_json(self.study))
        for key in sorted(set(stored) | set(mine)):  # compared as JSON: NaN equals NaN
            if json.dumps(stored.get(key)) != json.dumps(mine.get(key)):
                raise InvalidArgument(
                    f"{self.where} was written for another study: {key} is "
                    f"{stored.get(key)!r} there, {mine.get(key)!r} now; resume with the same "
                    "settings, or give another file")

    def _stored_study(self) -> dict[str, Any] | None:
        if not self.store.path.exists():
            return None

        def read(f: Any) -> dict[str, Any] | None:
            if self.name not in f:
                return None
            return dict(json.loads(f[self.name].attrs.get("study", "{}")))

        return self.store._read(read)

    def done(self) -> dict[int, R]:
        """The stored records by task index."""
        if not self.store.path.exists():
            return {}

        def read(f: Any) -> dict[int, R]:
            if self.name not in f:
                return {}
            out: dict[int, R] = {}
            for key, group in f[self.name].items():
                values = dict(json.loads(group.attrs["fields"]))
                for field_name, ds in group.items():
                    values[field_name] = np.asarray(ds[()])
                unknown = set(values) - self._fields
                if unknown:
                    raise InvalidArgument(f"{self.where}: record {key} has field(s) "
                                          f"{sorted(unknown)} that {self.record_type.__name__} "
                                          "does not have")
                out[int(key)] = self.record_type(**values)
            return out

        return self.store._read(read)

    def put(self, index: int, result: R) -> None:
        """Add the record of task ``index``: atomically, on disk before returning."""
        if not self.store.write or (self.skip is not None and self.skip(result)):
            return
        if not isinstance(result, self.record_type):
            raise InvalidArgument(f"{self.where}: expected a {self.record_type.__name__} "
                                  f"record, got {type(result).__name__}")
        scalars: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for f in dataclasses.fields(result):  # type: ignore[arg-type]
            value = getattr(result, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
            else:
                scalars[f.name] = _jsonable(value, f"{self.where} field {f.name!r}")
        text = json.dumps(scalars, allow_nan=True)
        self._write(index, text, arrays)

    def _write(self, index: int, fields_json: str, arrays: dict[str, np.ndarray]) -> None:
        import h5py

        path = self.store.path
        with atomic_path(path) as tmp:
            if path.exists():
                shutil.copyfile(path, tmp)
            with h5py.File(tmp, "a", locking=False) as f:
                sec = f.require_group(self.name)
                if self.study is not None or "study" not in sec.attrs:
                    sec.attrs["study"] = _study_json(self.study or {})
                sec.attrs["record_type"] = self.record_type.__name__
                key = f"{index:0{INDEX_DIGITS}d}"
                if key in sec:
                    del sec[key]
                g = sec.create_group(key)
                g.attrs["fields"] = fields_json
                for name, arr in arrays.items():
                    g.create_dataset(name, data=arr)


__all__ = ["INDEX_DIGITS", "ResultStore", "StoreSection"]
