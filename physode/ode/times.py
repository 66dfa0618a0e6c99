"""Output times: the one validation every entry point shares (solver, simulate, files).

A time grid is a non-empty 1-D array of finite times, strictly monotonic: increasing, or
(for the solver, which integrates backwards too) decreasing. :func:`times_problem` says
what is wrong in one sentence (or None); :func:`check_times` raises it as
:class:`~physode.errors.InvalidArgument`. Files wrap the same sentence in their own
location-bearing error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from physode.errors import InvalidArgument


def as_time_array(t: Any) -> np.ndarray:
    """``t`` (tensor, array, sequence of numbers) as a float64 numpy array; strings and
    other non-numbers raise :class:`InvalidArgument`."""
    if isinstance(t, torch.Tensor):
        if t.is_meta:
            raise InvalidArgument("times are on the meta device (a tensor without data)")
        if t.is_complex():
            raise InvalidArgument(f"times must be real numbers, got dtype {t.dtype}")
        return t.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(t)
    if arr.dtype.kind not in "biuf":
        raise InvalidArgument(f"times must be real numbers, got {arr.dtype.name} values "
                              f"{np.ravel(arr)[:3].tolist()!r}")
    return arr.astype(np.float64)


def times_problem(t: np.ndarray, *, decreasing: bool = True) -> str | None:
    """The first thing wrong with the time grid ``t`` as one sentence, or None when it is
    valid. ``decreasing=False`` allows only increasing grids (data files, simulate)."""
    if t.ndim != 1 or t.size == 0:
        return f"times must be a non-empty 1-D array, got shape {tuple(t.shape)}"
    if not np.all(np.isfinite(t)):
        i = int(np.flatnonzero(~np.isfinite(t))[0])
        return f"non-finite time {float(t[i])!r} at index {i}"
    d = np.diff(t)
    if np.any(d == 0):
        i = int(np.flatnonzero(d == 0)[0])
        return (f"duplicate time {float(t[i])!r} at indices {i} and {i + 1} "
                f"(t[{i}] = t[{i + 1}])")
    how = "strictly increasing or strictly decreasing" if decreasing else "increasing"
    backwards = decreasing and d.size > 0 and d[0] < 0
    bad = np.flatnonzero(d > 0 if backwards else d < 0)
    if bad.size:
        i = int(bad[0])
        return (f"times are not {how}: t[{i}]={float(t[i])!r}, "
                f"t[{i + 1}]={float(t[i + 1])!r}")
    return None


def check_times(t: Any, *, decreasing: bool = True, name: str = "t") -> np.ndarray:
    """``t`` as a validated float64 array; :class:`InvalidArgument` naming ``name`` else."""
    try:
        arr = as_time_array(t)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{name}: {exc}") from None
    problem = times_problem(arr, decreasing=decreasing)
    if problem is not None:
        raise InvalidArgument(f"{name}: {problem}")
    return arr
