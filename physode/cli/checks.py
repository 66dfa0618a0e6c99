"""Argument checks of the command line: validated number types for argparse, and output paths
checked before any work is done.

The number types turn ``--seed -1``, ``--n 0`` or ``--rtol nan`` into argparse's one-line
``argument --seed: ...`` error instead of a failure deep inside numpy or the solver.
:func:`check_outputs` refuses, before a fit or a simulation starts, an output that is one of
the command's inputs (same path, same inode, or a link to it), two outputs that are the same
file, and an output that cannot be written (a directory, ``/proc/x``, a missing or read-only
directory, an empty path); every message names the option and the user's path.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from physode.data.atomic import check_writable
from physode.errors import InvalidArgument


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in ``[minimum, maximum]`` ("invalid int value" when not an
    integer at all)."""

    def parse(text: str) -> int:
        value = int(text)  # ValueError -> argparse: "invalid int value: 'x'"
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be an integer <= {maximum}, got {text}")
        return value

    parse.__name__ = "int"
    return parse


def real(minimum: float | None = None, strict: bool = False) -> Callable[[str], float]:
    """argparse type: a finite float, optionally ``> minimum`` (``strict``) or ``>= minimum``."""

    def parse(text: str) -> float:
        value = float(text)  # ValueError -> argparse: "invalid float value: 'x'"
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if minimum is not None and (value <= minimum if strict else value < minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be {relation} {minimum:g}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name the same file: equal after resolving symbolic links (and
    ``..``), or the same inode (hard links, bind mounts)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


PathArg = tuple[str, str | os.PathLike[str] | None]


def check_outputs(outputs: Iterable[PathArg], inputs: Iterable[PathArg] = ()) -> None:
    """Refuse unusable outputs before any work; raise :class:`InvalidArgument` naming them.

    ``outputs`` and ``inputs`` are ``(option, path)`` pairs, e.g. ``("--out", "fit.nc")``;
    a path of None (option not given) is skipped. An output may not be an input, nor the
    same file as another output, and must be writable by
    :func:`physode.data.atomic.atomic_path` (missing parent directories are
    allowed: the commands create them).
    """
    given_inputs = [(flag, p) for flag, p in inputs if p is not None]
    seen: list[tuple[str, str | os.PathLike[str]]] = []
    for flag, out in outputs:
        if out is None:
            continue
        shown = os.fspath(out)
        if not shown:
            raise InvalidArgument(f"{flag}: empty path")
        for in_flag, inp in given_inputs:
            if same_file(out, inp):
                raise InvalidArgument(f"{flag} {shown} is the input {in_flag} "
                                      f"{os.fspath(inp)}: refusing to overwrite it")
        for other_flag, other in seen:
            if same_file(out, other):
                raise InvalidArgument(f"{flag} {shown} and {other_flag} {os.fspath(other)} "
                                      "are the same file")
        try:
            check_writable(out, parents=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise InvalidArgument(f"{flag} {shown}: {reason}") from None
        seen.append((flag, out))


def check_input(flag: str, path: str | os.PathLike[str]) -> Path:
    """An input file that exists and is not a directory, else an OSError naming it."""
    shown = os.fspath(path)
    if not shown:
        raise InvalidArgument(f"{flag}: empty path")
    p = Path(shown)
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file", shown)
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory", shown)
    return p


def make_parents(path: str | os.PathLike[str]) -> Path:
    """Create the missing parent directories of an output path; return it as a Path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


__all__ = ["check_input", "check_outputs", "integer", "make_parents", "real", "same_file"]
