"""Atomic file writing: :func:`atomic_path` (write a temporary file, rename it over the target)
and :func:`check_writable` (would such a write succeed?).

``os.replace`` is atomic on POSIX and Windows when source and target are on the same file
system, which a temporary file in the target's own directory guarantees. A reader therefore
sees either the previous file or the complete new one, never a half-written file, and an
exception (or a kill) during the write leaves the previous file untouched.

Rules (the README's "Security" paragraph states them for users):

- **Symbolic links are written through.** When the output path is a symbolic link, the file
  it points to is replaced (atomically, in that file's directory) and the link stays a link,
  as ``open(path, "w")`` would do; a dangling link creates its target, a link loop is refused.
- **Permissions are kept.** A replaced file keeps its mode (a 0600 file stays 0600) and, where
  the operating system allows it, its owner and group; the temporary file is 0600 while it is
  written. A new file gets the mode ``open(path, "w")`` gives (0o666 minus the umask). The
  replacement is a new inode: other hard links to the old file keep the old content.
- **What cannot be written is refused up front, naming the user's path**: an empty path, a
  directory, something other than a regular file (``/dev/null``, a FIFO), a read-only file,
  a missing or non-directory parent, a directory where files cannot be created. Errors are
  :class:`OSError` (``filename`` = the path the caller gave) or, for an empty path,
  :class:`~physode.errors.InvalidArgument`; never the temporary file's name.
- **No temporaries are left behind** by anything Python controls: an exception, Ctrl-C
  (``KeyboardInterrupt``) or ``SystemExit`` in the block removes the temporary file, and so does
  interpreter exit (``atexit``) for a write still in flight. A temporary is named
  ``.<name>.<host>-<pid>.<random>.tmp``; one left by a killed process (``kill -9``, power
  loss) is removed by the next write to the same path from this host once that process is
  gone. Other hidden files are never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from physode.errors import InvalidArgument

_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_STEM_MAX = 120  # characters of the target's name kept in a temporary's name (NAME_MAX 255)
_LIVE: dict[Path, int] = {}  # temporaries being written -> pid of the process writing them
_LOCK = threading.Lock()


def _shown(path: str | os.PathLike[str]) -> str:
    return os.fspath(path)


def _named(exc: OSError, shown: str, what: str = "", tmp: Path | None = None) -> OSError:
    """``exc`` re-raised under the user's path ``shown`` (never the temporary's name)."""
    if exc.errno is not None and exc.strerror:
        reason = f"{what}: {exc.strerror}" if what else exc.strerror
        return OSError(exc.errno, reason, shown)  # OSError picks the subclass from errno
    text = str(exc)
    if tmp is not None:
        text = text.replace(str(tmp), shown)
    if shown not in text:
        text = f"{shown}: {what + ': ' if what else ''}{text}"
    return OSError(text)


def _target(path: str | os.PathLike[str]) -> Path:
    """The file a write to ``path`` replaces: ``path``, or the end of its symlink chain."""
    shown = _shown(path)
    p = Path(shown)
    if not p.is_symlink():
        return p
    try:
        os.stat(p)
    except FileNotFoundError:
        pass  # a dangling link: its target is created
    except OSError as exc:  # ELOOP: a link loop
        raise _named(exc, shown, "cannot follow the symbolic link") from None
    return Path(os.path.realpath(p))


def _check(path: str | os.PathLike[str]) -> tuple[Path, os.stat_result | None]:
    """Validate an output path; return the file to replace and its stat (None if new)."""
    shown = _shown(path)
    if not shown:
        raise InvalidArgument("empty output path ''")
    if shown.endswith(("/", os.sep)):
        raise IsADirectoryError(errno.EISDIR, "names a directory (ends with '/')", shown)
    target = _target(path)
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _named(exc, shown) from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", shown)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (refusing to replace it)", shown)
        if not os.access(target, os.W_OK):
            raise PermissionError(errno.EACCES, "permission denied (the file is read-only)",
                                  shown)
    directory = target.parent
    if not directory.exists():
        raise FileNotFoundError(errno.ENOENT, f"no such directory '{directory}'", shown)
    if not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"'{directory}' is not a directory", shown)
    return target, st


def _temp_name(target: Path) -> str:
    return (f".{target.name[:_STEM_MAX]}.{_HOST}-{os.getpid()}."
            f"{secrets.token_hex(4)}.tmp")


def _create(directory: Path, target: Path, mode: int) -> Path:
    """Create an empty temporary file for ``target`` in ``directory`` (O_EXCL, no links)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = directory / _temp_name(target)
        try:
            fd = os.open(tmp, flags, mode)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(directory))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid this module writes: leave the file alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries that processes of this host, now dead, left for ``path``.

    Only files named like this module's temporaries for ``path``'s own name are looked at,
    and only those whose process no longer exists are removed. Returns the removed paths.
    """
    if os.name != "posix":  # os.kill(pid, 0) is not a liveness probe on Windows
        return []
    target = _target(path)
    pattern = re.compile(rf"\.{re.escape(target.name[:_STEM_MAX])}\.([0-9a-f]{{8}})-(\d+)"
                         r"\.[0-9a-f]{8}\.tmp")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or match[1] != _HOST:
            continue
        pid = int(match[2])
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def check_writable(path: str | os.PathLike[str], parents: bool = False) -> Path:
    """Raise an :class:`OSError` naming ``path`` unless :func:`atomic_path` could write it.

    Checks what :func:`atomic_path` checks, then creates and removes a temporary file where
    the output will go (the only honest test: ``/proc`` or a read-only mount pass
    ``os.access``). With ``parents=True`` a missing parent directory is allowed when the
    nearest existing ancestor is a directory in which it could be created. Returns the file
    that would be written (the end of a symbolic link chain). Writes nothing that stays.
    """
    shown = _shown(path)
    try:
        target, _ = _check(path)
        directory = target.parent
    except FileNotFoundError:
        if not parents or not shown:
            raise
        target = _target(path)
        directory = target.parent
        while not directory.exists() and directory != directory.parent:
            directory = directory.parent
        if not directory.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"'{directory}' is not a directory",
                                     shown) from None
    try:
        probe = _create(directory, target, 0o600)
    except OSError as exc:
        raise _named(exc, shown, f"cannot create files in '{directory}'") from None
    with contextlib.suppress(OSError):
        probe.unlink()
    return target


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``'s file; on normal exit rename it over ``path``.

    The caller writes the complete file to the yielded path (with any library that takes a
    path: h5py, xarray, numpy, matplotlib). If the block raises (any exception, Ctrl-C,
    ``SystemExit``), the temporary file is removed and ``path`` keeps its previous content.

    Symbolic links are written through: if ``path`` is a link, the file it points to is
    replaced atomically and the link is kept (a dangling link creates its target; a loop is
    an error). A replaced file keeps its mode (and, where allowed, owner and group); a new
    file gets ``open(path, "w")``'s mode (0o666 minus the umask). An unwritable ``path`` is
    refused before anything is written, with an :class:`OSError` whose ``filename`` is
    ``path`` as given (see :func:`check_writable`); stale temporaries of dead processes for
    the same path are removed first (see the module docstring).
    """
    shown = _shown(path)
    target, st = _check(path)
    remove_stale_temporaries(path)
    try:
        # 0600 while a replacement is written (the old mode is restored at the end); a new
        # file is created as open() would create it, so its final mode is the umask's.
        tmp = _create(target.parent, target, 0o600 if st is not None else 0o666)
    except OSError as exc:
        raise _named(exc, shown, f"cannot create files in '{target.parent}'") from None
    pid = os.getpid()
    with _LOCK:
        _LIVE[tmp] = pid
    try:
        mode = stat.S_IMODE(st.st_mode if st is not None else os.stat(tmp).st_mode)
        if mode & 0o600 != 0o600:  # the writer must be able to write (umask 0o277 ...)
            os.chmod(tmp, mode | 0o600)
        yield tmp
        _fsync(tmp)  # data on disk before the rename makes it visible
        if st is not None:
            now = os.stat(tmp)
            if (now.st_uid, now.st_gid) != (st.st_uid, st.st_gid):
                with contextlib.suppress(OSError):  # only root may give a file away
                    os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        if os.name == "posix":
            with contextlib.suppress(OSError):  # the rename itself on disk
                _fsync(target.parent, directory=True)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and (exc.filename == str(tmp) or str(tmp) in str(exc)):
            raise _named(exc, shown, "cannot write", tmp) from exc
        raise
    finally:
        with _LOCK:
            _LIVE.pop(tmp, None)


def _remove_live_temporaries() -> None:
    """At interpreter exit: remove the temporaries this process was still writing."""
    pid = os.getpid()
    with _LOCK:
        mine = [tmp for tmp, owner in _LIVE.items() if owner == pid]
        for tmp in mine:
            _LIVE.pop(tmp, None)
    for tmp in mine:
        with contextlib.suppress(OSError):
            tmp.unlink()


atexit.register(_remove_live_temporaries)

__all__ = ["atomic_path", "check_writable", "remove_stale_temporaries"]
