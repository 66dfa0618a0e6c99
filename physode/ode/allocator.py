"""A cache of small blocks in front of PyTorch's CPU allocator, for the compiled loops.

Why: a compiled solver loop (a ``while_loop`` compiled by inductor with its C++ wrapper)
allocates every intermediate buffer of its body again on every iteration: ~100 tensors of
a few hundred bytes per step. c10 asks for 64-byte aligned memory (``posix_memalign``),
and glibc before 2.38 serves aligned requests past its per-thread cache, through the
general heap (split, free the slack, coalesce). On the compiled cascade sensitivity solve
of ``benchmarks/stiff_kinetics.py`` that was 45 % of the time (``perf``), and a compiled
three-body gradient spent a third of its time there. ``small_blocks.cpp`` keeps freed
blocks of up to 256 KiB in per-size stacks (at most ~30 MiB in all) and hands them out
again; larger requests go to c10's allocator as before. It changes where small CPU tensors
come from, never what they hold.

It is put in place the first time a compiled loop is built (:func:`enable`), is built with
the C++ compiler that inductor uses anyway (~0.5 s, once: the library is cached under
``$PHYSODE_CACHE_DIR/allocator`` or ``~/.cache/physode/allocator``, keyed by its source
and the torch version), and stays for the life of the process.
``PHYSODE_CPU_ALLOCATOR=system`` leaves c10's allocator alone. Without a compiler, or if
the build fails, everything works as before, only slower; the reason is logged at INFO
level on the ``physode`` logger.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from physode.paths import cache_root

SOURCE = Path(__file__).with_name("small_blocks.cpp")
LOG = logging.getLogger("physode")

_STATE: dict[str, ctypes.CDLL | None] = {}


def cache_dir() -> Path:
    """Where the built library lives: ``allocator/`` in physode's cache folder
    (:mod:`physode.paths`)."""
    return cache_root() / "allocator"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(compiler: str) -> Path:
    """Compile ``small_blocks.cpp`` against this torch's c10 (once per source and torch),
    written to a temporary file and renamed, so a concurrent build never loads half a
    library."""
    torch_dir = Path(torch.__file__).parent
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + torch.__version__.encode() + str(torch_dir).encode()
                         + compiler.encode()).hexdigest()[:16]
    target = cache_dir() / f"small_blocks-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-fno-rtti",
           f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-I{torch_dir / 'include'}", str(SOURCE),
           "-o", tmp, f"-L{torch_dir / 'lib'}", "-lc10", f"-Wl,-rpath,{torch_dir / 'lib'}"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _library() -> ctypes.CDLL | None:
    if "lib" in _STATE:
        return _STATE["lib"]
    lib = None
    compiler = _compiler()
    if compiler is None:
        LOG.info("small-block CPU cache not built: no C++ compiler found (set CXX)")
    else:
        try:
            lib = ctypes.CDLL(str(_build(compiler)))
        except subprocess.CalledProcessError as err:
            detail = err.stderr or str(err)
            LOG.info("small-block CPU cache not built: %s", detail.strip()[-2000:])
        except (OSError, subprocess.SubprocessError) as err:
            LOG.info("small-block CPU cache not built: %s", err)
    _STATE["lib"] = lib
    return lib


def enable() -> bool:
    """Put the small-block cache in front of the CPU allocator (idempotent); ``False``
    when ``PHYSODE_CPU_ALLOCATOR=system`` or it could not be built."""
    if os.environ.get("PHYSODE_CPU_ALLOCATOR", "cache") == "system":
        return False
    lib = _library()
    if lib is None:
        return False
    lib.physode_small_blocks_install()
    return True


def disable() -> None:
    """Give the CPU back to c10's allocator; blocks handed out before still return to the
    cache when freed."""
    lib = _STATE.get("lib")
    if lib is not None:
        lib.physode_small_blocks_uninstall()


def counts() -> tuple[int, int]:
    """(allocations served from the cache, allocations that asked the system), since the
    library was loaded; ``(0, 0)`` when it was not."""
    lib = _STATE.get("lib")
    if lib is None:
        return 0, 0
    hits, misses = ctypes.c_uint64(), ctypes.c_uint64()
    lib.physode_small_blocks_counts(ctypes.byref(hits), ctypes.byref(misses))
    return hits.value, misses.value


__all__ = ["cache_dir", "counts", "disable", "enable"]
