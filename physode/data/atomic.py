"""Atomic file writing: write a temporary file next to the target, then rename it over.

``os.replace`` is atomic on POSIX and Windows when source and target are on the same file
system, which a temporary file in the target's own directory guarantees. A reader therefore
sees either the previous file or the complete new one, never a half-written file, and an
exception (or a kill) during the write leaves the previous file untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; on normal exit rename it to ``path``.

    The caller writes the complete file to the yielded path (with any library that takes a
    path: h5py, xarray, numpy). If the block raises, the temporary file is removed and
    ``path`` keeps its previous content. The new file gets the permissions a plain
    ``open(path, "w")`` would give it (mode 0o666 minus the umask)."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # data on disk before the rename makes it visible
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


__all__ = ["atomic_path"]
