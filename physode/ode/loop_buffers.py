"""How the compiled forward loop (:mod:`physode.ode.compiled_loop`) holds its
checkpoints: written in place into buffers of up to 1024 accepted steps, or — where a
step runs ``torch.func`` transforms, next to which inductor cannot functionalise in-place
writes — carried through the loop in chunks of ``CHUNK`` rows."""

from __future__ import annotations

import math

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from physode.ode.methods.base import Method
from physode.ode.methods.jacobian import factor_shape, transform_free
from physode.ode.methods.step import VectorField, declaration

CHUNK = 64
"""Accepted steps per compiled forward call of the per-sample loop
(:mod:`physode.ode.compiled_batch`, whose buffers are carried and so copied per trial)."""

MIN_ROWS, MAX_ROWS = 64, 1024
CHUNK_BYTES = 8 * 2**20
"""Checkpoint rows per in-place forward call of
:class:`~physode.ode.compiled_loop.CompiledLoop`: as many as fit in ``CHUNK_BYTES``,
within ``[MIN_ROWS, MAX_ROWS]`` (see :func:`chunk_rows`)."""


def leave_dual_levels() -> None:
    """A compile that fails inside a ``torch.func.jvp`` under ``vmap`` leaves its
    forward-AD level entered in C++ (torch 2.13), though Python's count says none is, and
    every later ``jvp`` then fails ("Nested forward mode AD is not supported at the
    moment"). Leave such an orphaned level; a level the caller entered is left alone."""
    if fwAD._current_level >= 0:
        return
    try:
        level = torch._C._enter_dual_level()
    except RuntimeError:  # level 0 is entered, and nobody in Python holds it
        torch._C._exit_dual_level(level=0)
    else:
        torch._C._exit_dual_level(level=level)


def writes_in_place(method: Method, func: VectorField) -> bool:
    """Whether the forward loop may write its checkpoints in place: not when a step runs
    ``torch.func`` transforms (see ``compiled_loop._forward_chunk``): a field that declares
    ``function_transforms``, or a stiff method whose Jacobian or time derivative of
    ``func`` comes from ``jacrev``/``jvp`` (:func:`~physode.ode.methods.jacobian.
    transform_free`)."""
    if declaration(func, "function_transforms"):
        return False
    return not method.stiff or transform_free(func)


class Writes:
    """One compiled loop's choice of in place or carried, per field: the declared rule
    (:func:`writes_in_place`), and the field types whose in-place compile failed."""

    def __init__(self, method: Method) -> None:
        self.method = method
        self.carrying: set[type] = set()

    def in_place(self, func: VectorField) -> bool:
        return writes_in_place(self.method, func) and type(func) not in self.carrying

    def failed(self, func: VectorField) -> None:
        """The in-place compile of ``func`` failed (undeclared ``torch.func`` transforms,
        such as a Hamiltonian field's ``torch.func.grad``): repair the forward-AD state
        and carry the buffers for fields of its type from now on."""
        leave_dual_levels()
        self.carrying.add(type(func))


Packing = tuple[tuple[tuple[int, ...], torch.dtype], ...]
"""The shapes and dtypes of parameters packed into one vector (a static argument of the
compiled reverse loop: a new layout compiles anew, new values never do)."""


def pack(params: tuple[Tensor, ...], like: Tensor) -> tuple[Packing, Tensor]:
    """``params`` as one flat vector of the widest of their dtypes and ``like``'s (so each
    value is kept exactly) and the layout that :func:`unpack` undoes."""
    spec = tuple((tuple(p.shape), p.dtype) for p in params)
    dtype = like.dtype
    for p in params:
        dtype = torch.promote_types(dtype, p.dtype)
    if not params:
        return spec, like.new_zeros(0)
    return spec, torch.cat([p.detach().reshape(-1).to(dtype) for p in params])


def unpack(flat: Tensor, spec: Packing) -> tuple[Tensor, ...]:
    """The parameters (or their gradients) in :func:`pack`'s layout, each in its dtype."""
    if not spec:
        return ()
    # one split, not a slice each: a slice's derivative is a zero-padded copy of the whole
    # vector, so P slices would cost P^2 in the reverse graph; split's derivative is a cat
    pieces = torch.split(flat, [math.prod(shape) for shape, _ in spec])
    return tuple(x.reshape(shape).to(dtype) for x, (shape, dtype) in zip(pieces, spec))


def chunk_rows(y0: Tensor, n_ext: int, extra: int = 0) -> int:
    """Checkpoint rows per forward call for states like ``y0`` with ``n_ext`` stage
    vectors per step (and ``extra`` bytes more per row: a step's factor): fewer calls
    (each costs Python, dynamo's guards and the outputs' fill) against the memory held per
    chunk, at most ``CHUNK_BYTES``."""
    row = (2 + (2 + n_ext) * y0.numel()) * y0.element_size() + extra
    return max(MIN_ROWS, min(MAX_ROWS, CHUNK_BYTES // row))


FACTOR_BYTES = 256 * 2**20
"""At most this much memory per solve holds stiff steps' factors for the reverse sweep."""


class Factors:
    """Where a compiled forward solve keeps each accepted stiff step's inverse
    (``Step.factor``) for ACA's reverse sweep (``Method.reuses_factor``), "where memory
    allows": in place only (carried buffers would copy them on every trial), and only
    while the solve's factors stay within :data:`FACTOR_BYTES`; later chunks keep none and
    their steps invert again in the reverse sweep. A 7-species network's step keeps 392
    bytes (256 MiB: ~680 000 steps), a 52-species one's 21.6 kB (~12 000 steps).
    Forward-only solves write them too, so that they and ACA share one compiled forward
    graph (a second variant would compile anew); the cost was not measurable (cascade
    simulation, the session-start commit and this one alternately: 7.0-7.1 ms both)."""

    def __init__(self, method: Method, func: VectorField, y0: Tensor, in_place: bool) -> None:
        keep = method.reuses_factor and in_place
        self.shape = factor_shape(func, y0) if keep else (0, 0, 0)
        self.like = y0
        self.row_bytes = self.shape[0] * self.shape[1] * self.shape[2] * y0.element_size()
        self.held = 0

    def buffer(self, rows: int) -> Tensor:
        """The factor buffer of the next chunk: ``(rows, M, n, n)``, or no rows (nothing
        kept: not a stiff method, carried buffers, or the budget is spent)."""
        size = rows * self.row_bytes
        if not size or self.held + size > FACTOR_BYTES:
            return self.like.new_empty(0)
        self.held += size
        return self.like.new_empty((rows, *self.shape))


__all__ = ["CHUNK", "CHUNK_BYTES", "FACTOR_BYTES", "MAX_ROWS", "MIN_ROWS", "Factors", "Packing",
           "Writes", "chunk_rows", "leave_dual_levels", "pack", "unpack", "writes_in_place"]
