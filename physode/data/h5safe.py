"""Safe access to an open HDF5 file: links, storage, sizes, checksums checked before reading.

:class:`SafeReader` is what :mod:`physode.data.hdf5` reads observations files with. It
follows hard links and soft links that stay inside the file, and refuses external links,
soft links that lead out, external raw storage and virtual datasets; it checks a
dataset's dtype and shape (metadata) and the file's budget of :data:`MAX_VALUES` before
reading it, an attribute's size before reading it, and reports a failed Fletcher-32
checksum. Every error is an :class:`~physode.errors.InvalidObservations` naming the file,
the group and the dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from physode.data.observations import MetaValue, metadata_value
from physode.data.schema import location
from physode.errors import InvalidObservations

#: The most values (array elements, all datasets together) one file may declare; checked
#: from the datasets' shapes before any data is read. 2**25 float64 values are 256 MiB.
#: Raise it per call with ``load_observations(path, max_values=...)``.
MAX_VALUES = 2**25
#: The most elements one attribute (member lists, ``dims``, ``index_*``, metadata) may hold.
MAX_ATTRIBUTE_VALUES = 2**16
#: Soft links followed through at most this many other soft links.
_MAX_SOFT_LINK_DEPTH = 8

Expect = Callable[[tuple[int, ...]], str | None]


class SafeReader:
    """Reads one file, tracking where it is so that every error can name its location,
    and how many values the file has declared so far."""

    def __init__(self, f: Any, source: str, max_values: int) -> None:
        self.f = f
        self.source = source
        self.where = f"{source}: group '/'"
        self.max_values = max_values
        self.budget = max_values
        self.dims: dict[tuple[str, str], tuple[str, ...] | None] = {}

    def at(self, group: str, dataset: str | None = None) -> str:
        self.where = location(self.source, group, dataset)
        return self.where

    def fail(self, message: str) -> InvalidObservations:
        return InvalidObservations(f"{self.where}: {message}")

    # -------------------------------------------------------------- links
    def member(self, parent: Any, name: str) -> Any:
        """``parent[name]`` through hard links and in-file soft links only; None if absent."""
        import h5py

        link = parent.get(name, getlink=True)
        if link is None:
            return None
        if isinstance(link, h5py.HardLink):
            return parent[name]
        if isinstance(link, h5py.SoftLink):
            return self._walk(str(link.path), parent, 1)
        if isinstance(link, h5py.ExternalLink):
            raise self.fail(f"external link to {link.path!r} in file {link.filename!r}: a data "
                            "file may not point outside itself")
        raise self.fail(f"unsupported link type {type(link).__name__}")

    def _walk(self, path: str, start: Any, depth: int) -> Any:
        import h5py

        if depth > _MAX_SOFT_LINK_DEPTH:
            raise self.fail(f"soft link to {path!r}: more than {_MAX_SOFT_LINK_DEPTH} soft "
                            "links in a row (a loop?)")
        cur = self.f if path.startswith("/") else start
        for part in (p for p in path.split("/") if p and p != "."):
            link = cur.get(part, getlink=True) if isinstance(cur, h5py.Group) else None
            if link is None:
                raise self.fail(f"soft link to {path!r} points at nothing in this file")
            if isinstance(link, h5py.ExternalLink):
                raise self.fail(f"soft link to {path!r} leads out of the file (external link "
                                f"to file {link.filename!r})")
            if isinstance(link, h5py.SoftLink):
                cur = self._walk(str(link.path), cur, depth + 1)
            elif isinstance(link, h5py.HardLink):
                cur = cur[part]
            else:
                raise self.fail(f"soft link to {path!r} passes an unsupported link")
        return cur

    # -------------------------------------------------------------- members
    def group(self, parent: Any, name: str, path: str, required: bool = True) -> Any:
        import h5py

        self.at(path)
        obj = self.member(parent, name)
        if obj is None:
            if required:
                raise self.fail("missing group")
            return None
        if not isinstance(obj, h5py.Group):
            raise self.fail("expected a group, found a dataset")
        return obj

    def attr(self, obj: Any, key: str) -> Any:
        """An attribute's value, its size checked before it is read."""
        shape = obj.attrs.get_id(key).shape
        n = int(np.prod(shape)) if shape else 1
        if shape is not None and n > MAX_ATTRIBUTE_VALUES:
            raise self.fail(f"attribute {key!r} declares {n} values (shape {shape}); at most "
                            f"{MAX_ATTRIBUTE_VALUES} are allowed")
        return obj.attrs[key]

    def names_attr(self, g: Any, group: str, key: str) -> list[str]:
        self.at(group)
        if key not in g.attrs:
            raise self.fail(f"missing attribute {key!r} (the list of its members)")
        raw = np.asarray(self.attr(g, key)).reshape(-1)
        names = [x.decode() if isinstance(x, bytes) else x for x in raw.tolist()]
        if not all(isinstance(n, str) and n and "/" not in n for n in names):
            raise self.fail(f"attribute {key!r} must list member names, got {raw!r}")
        if len(set(names)) != len(names):
            raise self.fail(f"attribute {key!r} lists a name twice: {names}")
        return names

    def dataset_object(self, g: Any, group: str, name: str, kind: str = "f") -> Any:
        """The dataset ``name`` of ``g``, its storage and dtype checked (metadata only)."""
        import h5py

        self.at(group, name)
        obj = self.member(g, name)
        if obj is None:
            raise self.fail("missing dataset")
        if not isinstance(obj, h5py.Dataset):
            raise self.fail("expected a dataset, found a group")
        if obj.is_virtual:
            raise self.fail("virtual dataset (its data would come from other files): refused")
        if obj.external:
            files = sorted({str(e[0]) for e in obj.external})
            raise self.fail(f"external raw storage in {files}: a data file may not point "
                            "outside itself")
        if obj.dtype.kind not in kind:
            want = {"f": "floating-point", "b": "boolean", "iu": "integer"}.get(kind, kind)
            raise self.fail(f"expected {want} data, got dtype {obj.dtype}")
        return obj

    def dataset(self, g: Any, group: str, name: str, kind: str = "f",
                expect: Expect | None = None) -> np.ndarray:
        """Check storage, dtype, shape (``expect``) and the file's value budget, then read."""
        obj = self.dataset_object(g, group, name, kind)
        shape = obj.shape
        if shape is None:
            raise self.fail("dataset has no shape (an empty dataspace)")
        problem = expect(tuple(shape)) if expect is not None else None
        if problem is not None:
            raise self.fail(problem)
        n = int(np.prod(shape, dtype=object))
        if n > self.budget:
            raise self.fail(f"shape {tuple(shape)} declares {n} values, more than the "
                            f"{self.max_values} one file may hold in all (MAX_VALUES; pass "
                            "max_values= to load_observations to allow more)")
        self.budget -= n
        if n and not _fully_stored(obj):
            raise self.fail("part of the data is not stored in the file (unallocated storage "
                            "would read as fill values): the file is damaged")
        try:
            data = obj[()]
        except OSError as exc:
            if obj.fletcher32:
                raise self.fail("checksum mismatch (Fletcher-32): the data are corrupt "
                                f"({exc})") from None
            raise self.fail(f"cannot read the data ({exc})") from None
        return np.asarray(data)

    def str_attr(self, obj: Any, key: str, required: bool = False) -> str | None:
        if key not in obj.attrs:
            if required:
                raise self.fail(f"missing attribute {key!r}")
            return None
        value = self.attr(obj, key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str):
            raise self.fail(f"attribute {key!r} must be a string, got {value!r}")
        return value

    def metadata(self, obj: Any, skip: Iterable[str] = ()) -> dict[str, MetaValue]:
        return {k: metadata_value(self.attr(obj, k), self.where) for k in obj.attrs
                if k not in skip}

    def unexpected(self, g: Any, group: str, listed: Iterable[str]) -> None:
        extra = sorted(set(g.keys()) - set(listed))
        if extra:
            self.at(group, extra[0])
            raise self.fail(f"member(s) {extra} not listed in the group's attribute")


def _fully_stored(obj: Any) -> bool:
    """Whether every byte of the dataset's data is allocated in the file (metadata only)."""
    import h5py

    dsid = obj.id
    if dsid.get_storage_size() == 0:
        return False
    if obj.chunks is None:
        return True
    layout = dsid.get_create_plist().get_layout()
    if layout != h5py.h5d.CHUNKED:
        return True
    expected = 1
    for size, chunk in zip(obj.shape, obj.chunks):
        expected *= -(-size // chunk)
    return bool(dsid.get_num_chunks() >= expected)


__all__ = ["MAX_ATTRIBUTE_VALUES", "MAX_VALUES", "Expect", "SafeReader"]
