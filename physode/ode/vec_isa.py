"""Inductor's vector-ISA probe, answered once per machine instead of once per process.

Why: before inductor compiles a CPU kernel, or loads one from its cache, it checks which
vector instruction sets work. For each set that ``/proc/cpuinfo`` announces, it compiles a
test program and loads it in a fresh Python subprocess. That is six subprocesses and
~0.8 s in every new process, also when every compiled loop comes out of the cache: a
fifth of the first compiled three-body gradient in a fresh process with a warm cache
(4.6 -> 3.8 s, measured; issue 13), paid again by every fit in a new process and every
worker of a process pool.

The answer depends only on the CPU's flags, the C++ compiler, torch and the Python
executable. :func:`vec_isa_ok` runs inductor's own probe once per such key, records the
outcome in ``inductor/vec-isa-<key>.json`` under physode's cache folder (written
atomically), and answers ``True`` when every announced set passed. Every
``torch.compile`` of physode then passes ``cpp.vec_isa_ok=True`` to inductor
(:func:`isa_options`), which skips the probe; the kernels are the ones it would have
picked. When a set failed, on other platforms, when the user set
``TORCHINDUCTOR_VEC_ISA_OK``, or when torch's private probe API is not there, it answers
``None`` and inductor probes as before. The answer goes into inductor's cache key, so
every process of one machine asks it the same way and shares the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from physode.paths import cache_root

LOG = logging.getLogger("physode")

_ANSWER: dict[str, bool | None] = {}


def _announced() -> tuple[list[str], str] | None:
    """(the vector ISAs ``/proc/cpuinfo`` announces, in inductor's order of preference;
    the record's key) on x86-64 Linux, ``None`` elsewhere. Runs no probe."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    from torch._inductor import cpu_vec_isa
    from torch._inductor.cpp_builder import get_cpp_compiler

    flags = cpu_vec_isa.x86_isa_checker()
    announced = [str(isa) for isa in cpu_vec_isa.supported_vec_isa_list
                 if all(flag in flags for flag in str(isa).split())]
    parts = [torch.__version__, sys.executable, str(get_cpp_compiler()), *sorted(flags)]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return announced, key


def record_path(key: str) -> Path:
    """Where the outcome for ``key`` is kept."""
    return cache_root() / "inductor" / f"vec-isa-{key}.json"


def _write(path: Path, record: dict[str, list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(record, out)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _decide() -> bool | None:
    from torch._inductor import config

    if config.cpp.vec_isa_ok is not None:  # the user's own setting stands
        return None
    found = _announced()
    if found is None:
        return None
    announced, key = found
    path = record_path(key)
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or record.get("announced") != announced:
            raise ValueError("another CPU's answer, or not a record")
    except (OSError, ValueError):
        from torch._inductor import cpu_vec_isa

        passed = [str(isa) for isa in cpu_vec_isa.valid_vec_isa_list()]  # the probe
        record = {"announced": announced, "passed": passed}
        try:
            _write(path, record)
        except OSError as err:
            LOG.info("vector-ISA probe not recorded: %s", err)
    return True if announced and record.get("passed") == announced else None


def vec_isa_ok() -> bool | None:
    """``True`` when inductor's probe passed every announced vector ISA on this machine
    (probing once if no record exists), else ``None`` (let inductor probe); cached for the
    process. Never raises: any failure answers ``None``."""
    if "answer" not in _ANSWER:
        try:
            _ANSWER["answer"] = _decide()
        except Exception as err:  # torch's private probe API moved: probe as before
            LOG.info("vector-ISA probe record unavailable: %s", err)
            _ANSWER["answer"] = None
    return _ANSWER["answer"]


def isa_options() -> dict[str, Any]:
    """The inductor options that skip the probe (``{"cpp.vec_isa_ok": True}``) when
    :func:`vec_isa_ok` says so, else ``{}``: for every ``torch.compile`` physode makes."""
    return {"cpp.vec_isa_ok": True} if vec_isa_ok() else {}


__all__ = ["isa_options", "record_path", "vec_isa_ok"]
