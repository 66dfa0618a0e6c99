"""Named state variables and their packing into the solver's flat state vector.

A system's state is a few named arrays (``position`` of dims (body, axis), ``concentration``
of dim species, ``theta``...). Solvers want one flat vector per trajectory, with any number
of leading batch dimensions. :class:`Layout` converts between the two: variable ``k``
occupies the slice ``[offset_k, offset_k + size_k)`` of the last axis, flattened in C order,
in declaration order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from physode.errors import InvalidSystem
from physode.model.parameter import as_float64_tensor


@dataclass(frozen=True)
class StateVar:
    """One named state variable.

    Args:
        name: identifier, e.g. ``"position"``.
        shape: shape of one trajectory's value (``()`` for a scalar such as ``theta``).
        dims: one dimension name per axis of ``shape``, e.g. ``("body", "axis")``.
        coords: optional labels per dimension, e.g. ``{"axis": ("x", "y", "z")}``; carried
            into xarray coordinates.
        units: unit string, carried into HDF5 and xarray ``attrs["units"]``.
        description: one line for reports.
    """

    name: str
    shape: tuple[int, ...] = ()
    dims: tuple[str, ...] = ()
    coords: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    units: str | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise InvalidSystem(f"state variable name must be an identifier, got {self.name!r}")
        shape = (self.shape,) if isinstance(self.shape, int) else tuple(int(s) for s in self.shape)
        dims = (self.dims,) if isinstance(self.dims, str) else tuple(self.dims)
        if any(s < 1 for s in shape):
            raise InvalidSystem(f"state variable {self.name!r}: shape {shape} has an empty axis")
        if len(dims) != len(shape):
            raise InvalidSystem(
                f"state variable {self.name!r}: {len(shape)} axes in shape {shape} but "
                f"{len(dims)} dimension names {dims}"
            )
        if len(set(dims)) != len(dims):
            raise InvalidSystem(f"state variable {self.name!r}: repeated dimension name in {dims}")
        coords = {}
        for dim, values in dict(self.coords or {}).items():
            if dim not in dims:
                raise InvalidSystem(
                    f"state variable {self.name!r}: coordinates for unknown dimension {dim!r} "
                    f"(dims are {dims})"
                )
            values = tuple(values)
            size = shape[dims.index(dim)]
            if len(values) != size:
                raise InvalidSystem(
                    f"state variable {self.name!r}: {len(values)} coordinates for dimension "
                    f"{dim!r} of size {size}"
                )
            coords[dim] = values
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dims", dims)
        object.__setattr__(self, "coords", coords)

    @property
    def size(self) -> int:
        """Number of scalars in one trajectory's value."""
        return math.prod(self.shape)


class Layout:
    """Offsets of named variables in the flat state vector; packs and unpacks."""

    def __init__(self, variables: Sequence[StateVar]) -> None:
        variables = tuple(variables)
        if not variables:
            raise InvalidSystem("a system needs at least one state variable")
        for v in variables:
            if not isinstance(v, StateVar):
                raise InvalidSystem(f"state variables must be StateVar instances, got {v!r}")
        names = [v.name for v in variables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidSystem(f"state variable name(s) declared twice: {dupes}")
        self.variables = variables
        self.names = tuple(names)
        self.slices: dict[str, slice] = {}
        offset = 0
        for v in variables:
            self.slices[v.name] = slice(offset, offset + v.size)
            offset += v.size
        self.size = offset
        self.by_name = {v.name: v for v in variables}

    def batch_shape(self, y: Tensor) -> tuple[int, ...]:
        if y.dim() == 0 or y.shape[-1] != self.size:
            raise InvalidSystem(
                f"state of shape {tuple(y.shape)} does not end with the state size {self.size} "
                f"(variables {list(self.names)})"
            )
        return tuple(y.shape[:-1])

    def unpack(self, y: Tensor) -> dict[str, Tensor]:
        """Views of ``y`` (``(*batch, size)``) as ``{name: (*batch, *shape)}``."""
        batch = self.batch_shape(y)
        return {
            v.name: y[..., self.slices[v.name]].reshape((*batch, *v.shape)) for v in self.variables
        }

    def pack(
        self,
        values: Mapping[str, Tensor],
        batch: tuple[int, ...] | None = None,
        what: str = "state",
    ) -> Tensor:
        """Flatten ``{name: (*batch, *shape)}`` into ``(*batch, size)``.

        Every variable must be present; values broadcast against ``batch`` (inferred from
        the values when not given), so a constant derivative may be returned unbatched.
        """
        if len(values) != len(self.variables) or any(n not in values for n in self.names):
            missing = [n for n in self.names if n not in values]
            extra = [n for n in values if n not in self.by_name]
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unknown {extra}")
            raise InvalidSystem(
                f"{what} must give exactly the state variables {list(self.names)}: "
                + ", ".join(parts)
            )
        tensors = []
        for v in self.variables:
            x = values[v.name]
            if not isinstance(x, Tensor):
                raise InvalidSystem(f"{what} for {v.name!r} is not a tensor: {type(x).__name__}")
            nd = len(v.shape)
            if nd and (x.dim() < nd or tuple(x.shape[x.dim() - nd :]) != v.shape):
                raise InvalidSystem(
                    f"{what} for {v.name!r} has shape {tuple(x.shape)}, "
                    f"expected (*batch, {', '.join(map(str, v.shape))})"
                )
            tensors.append(x)
        if batch is None:
            batch = torch.broadcast_shapes(
                *(tuple(x.shape[: x.dim() - len(v.shape)]) for x, v in zip(tensors, self.variables))
            )
        flat = []
        for x, v in zip(tensors, self.variables):
            if tuple(x.shape) != (*batch, *v.shape):
                x = x.expand((*batch, *v.shape))
            flat.append(x.reshape((*batch, v.size)))
        return torch.cat(flat, dim=-1) if len(flat) > 1 else flat[0]

    def initial_from(self, y0: Any, current: Tensor | None, owner: str = "system") -> Tensor:
        """A flat initial state ``(*batch, size)`` from ``y0``: a flat array, or
        ``{variable: value}`` (a partial mapping updates those variables of ``current``)."""
        if isinstance(y0, Mapping):
            unknown = [k for k in y0 if k not in self.by_name]
            if unknown:
                raise InvalidSystem(
                    f"y0 names unknown state variable(s) {unknown}; the variables of "
                    f"{owner} are {list(self.names)}"
                )
            values = {} if current is None else self.unpack(current.detach())
            for k, v in y0.items():
                values[k] = as_float64_tensor(v, f"y0[{k!r}]")
            missing = [n for n in self.names if n not in values]
            if missing:
                raise InvalidSystem(f"y0 is missing state variable(s) {missing}")
            flat = self.pack(values, what="y0")
        else:
            flat = as_float64_tensor(y0, "y0")
            if flat.dim() == 0 or flat.shape[-1] != self.size:
                raise InvalidSystem(
                    f"y0 of shape {tuple(flat.shape)} does not match the state size "
                    f"{self.size} of {owner} ({list(self.names)})"
                )
        if not bool(torch.isfinite(flat).all()):
            raise InvalidSystem("y0 contains NaN or inf")
        return flat


__all__ = ["Layout", "StateVar"]
