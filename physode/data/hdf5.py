"""Observations files (HDF5): load_observations, read_observations, save_observations.

The layout is written up in ``datasets/README.md``; the rules are those of
:mod:`physode.data.schema`. A file is data, never code, and never a pointer elsewhere:

- the root attribute ``system`` is looked up in the registry only (never imported);
- external links, soft links that lead out of the file, external raw storage and virtual
  datasets are refused, naming the dataset;
- every dataset's shape, dtype and storage are checked (metadata only) before a byte of
  it is read, and one file may declare at most :data:`MAX_VALUES` values in all, so a
  small file cannot make physode allocate gigabytes;
- datasets are written with HDF5's Fletcher-32 checksum filter (scalars in the
  checksummed object header), and a checksum failure on read is an
  :class:`~physode.errors.InvalidObservations` naming the dataset. Older files without
  the filter still load (no filter, no check).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from physode.data.atomic import atomic_path
from physode.data.h5safe import MAX_ATTRIBUTE_VALUES, MAX_VALUES, Expect, SafeReader
from physode.data.hdf5_parts import (
    PART_GROUPS,
    read_declarations,
    read_parts,
    uses_parts,
    write_declarations,
    write_parts,
)
from physode.data.observations import Experiment, MetaValue, Observations
from physode.data.schema import (
    OPTIONAL_PARTS,
    RESERVED_ROOT_ATTRS,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    location,
    name_mismatch,
    raise_if,
    resolve_system,
    sigma_shapes,
    system_args,
    violations,
)
from physode.errors import InvalidObservations
from physode.model import registry
from physode.model.system import System

#: Datasets up to this many bytes are one chunk (the checksum needs chunked storage).
_ONE_CHUNK_BYTES = 2**20


# ---------------------------------------------------------------------------- writing
def save_observations(obs: Observations, path: str | os.PathLike[str],
                      system: System | None = None) -> None:
    """Validate ``obs`` and write it to ``path`` (HDF5, the schema of datasets/README.md).

    ``system``: the instance to check the layout against; by default ``obs.system`` is
    looked up in the registry. The write is atomic: the file is written under a temporary
    name in the same directory and renamed over ``path``, so an interrupted save leaves
    any previous file intact. Every dataset carries a Fletcher-32 checksum."""
    if not isinstance(obs, Observations):
        raise InvalidObservations(f"save_observations needs an Observations object, got "
                                  f"{type(obs).__name__}")
    if system is None:
        system = resolve_system(obs.system, str(path), system_args(obs, str(path)))
    obs.validate(system)
    dims = {v.name: v.dims for v in (*system.observable_vars, *system.layout.variables)}
    with atomic_path(path) as tmp, _new_file(tmp) as f:
        f.attrs["schema"] = SCHEMA_NAME
        version = obs.schema_version
        if obs.declarations or any(uses_parts(e) for e in obs.experiments):
            version = max(version, 2)  # the parts need schema 2
        f.attrs["schema_version"] = np.int64(version)
        f.attrs["system"] = obs.system
        f.attrs["creator"] = obs.creator
        for key, value in obs.metadata.items():
            f.attrs[key] = _meta_to_attr(value)
        if obs.parameters:
            pg = _group(f, "parameters")
            pg.attrs["names"] = _names_attr(obs.parameters)
            for name, value in obs.parameters.items():
                ds = _create(pg, name, value)
                if name in obs.parameter_units:
                    ds.attrs["units"] = obs.parameter_units[name]
        write_declarations(f, obs.declarations, _create, _group)
        eg = _group(f, "experiments")
        eg.attrs["names"] = _names_attr(e.name for e in obs.experiments)
        for exp in obs.experiments:
            _write_experiment(_group(eg, exp.name), exp, obs, dims)
        _inline_strings(f)


def _new_file(path: str | os.PathLike[str]) -> Any:
    """A new HDF5 file in the 1.10 format, whose superblock, object headers and chunk
    indexes carry checksums, without timestamps (the same data give the same bytes)."""
    import h5py

    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_LATEST)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fid = h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl)
    return h5py.File(fid)


def _inline_strings(f: Any) -> None:
    """Rewrite every variable-length string attribute as a fixed-length UTF-8 one.

    Variable-length strings live in HDF5's global heap, which carries no checksum: a
    flipped bit there made HDF5 1.14 loop for minutes in ``H5HG`` while reading the root
    attribute ``schema`` (found by the bit-flip test of tests/data/test_file_safety.py).
    Fixed-length strings are stored in the attribute message, inside the object header,
    which the 1.10 file format checksums, so such a flip is a clear error instead. Readers
    get ``bytes`` back and decode them as UTF-8, as they do for files of other writers."""
    import h5py

    def text(values: Any) -> np.ndarray:
        arr = np.asarray(values, dtype=object)
        data = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in arr.ravel()]
        width = max([1] + [len(b) for b in data])
        return np.array(data, dtype=h5py.string_dtype("utf-8", width)).reshape(arr.shape)

    objects = [f]
    f.visit(lambda name: objects.append(f[name]))
    for obj in objects:
        for key in list(obj.attrs):
            info = h5py.check_string_dtype(obj.attrs.get_id(key).dtype)
            if info is not None and info.length is None:
                obj.attrs[key] = text(obj.attrs[key])


def _group(parent: Any, name: str) -> Any:
    import h5py

    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    h5py.h5g.create(parent.id, name.encode("utf-8"), gcpl=gcpl)
    return parent[name]


def _meta_to_attr(value: MetaValue) -> Any:
    if isinstance(value, tuple):
        if len(value) == 0:
            return np.zeros(0)
        arr = np.asarray(value)
        if arr.dtype.kind == "U":
            return arr.astype(object)
        return arr
    return value


def _names_attr(names: Iterable[str]) -> np.ndarray:
    return np.asarray(list(names), dtype=object)


def _create(g: Any, name: str, data: Any) -> Any:
    """A dataset with a checksum: Fletcher-32 on a chunked array, or a scalar stored
    compactly in its object header (checksummed by HDF5 >= 1.8 file format)."""
    import h5py

    arr = np.asarray(data)
    if arr.ndim == 0:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        dcpl.set_obj_track_times(False)
        space = h5py.h5s.create(h5py.h5s.SCALAR)
        tid = h5py.h5t.py_create(arr.dtype, logical=True)
        dsid = h5py.h5d.create(g.id, name.encode("utf-8"), tid, space, dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(arr))
        return g[name]
    if arr.size == 0:
        return g.create_dataset(name, data=arr, track_times=False)
    chunks = arr.shape if arr.nbytes <= _ONE_CHUNK_BYTES else True
    return g.create_dataset(name, data=arr, chunks=chunks, fletcher32=True, track_times=False)


def _write_experiment(g: Any, exp: Experiment, obs: Observations,
                      dims: Mapping[str, tuple[str, ...]]) -> None:
    for key, value in exp.metadata.items():
        g.attrs[key] = _meta_to_attr(value)
    ts = _create(g, "time", exp.t)
    ts.attrs["dims"] = _names_attr(["time"])
    if obs.time_units is not None:
        ts.attrs["units"] = obs.time_units
    ts.attrs["t0"] = np.float64(exp.t0)
    vg = _group(g, "values")
    vg.attrs["variables"] = _names_attr(exp.values)
    for name, v in exp.values.items():
        ds = _create(vg, name, v)
        ds.attrs["dims"] = _names_attr(["time", *dims[name]])
        if name in obs.units:
            ds.attrs["units"] = obs.units[name]
        for dim, pos in exp.index.get(name, {}).items():
            ds.attrs[f"index_{dim}"] = pos
    for part in OPTIONAL_PARTS:
        content = getattr(exp, part)
        if not content:
            continue
        pg = _group(g, part)
        pg.attrs["variables"] = _names_attr(content)
        for name, v in content.items():
            ds = _create(pg, name, v)
            if part != "mask" and name in obs.units:
                ds.attrs["units"] = obs.units[name]
    write_parts(g, exp, _create, _group)


# ---------------------------------------------------------------------------- reading
def _open(path: str | os.PathLike[str], max_values: int) -> tuple[Observations, SafeReader]:
    """Read ``path`` into Observations (structure checked, no system built)."""
    import h5py

    source = str(path)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{source}: no such file")
    if p.is_dir():
        raise InvalidObservations(f"{source}: is a directory, not an HDF5 file")
    try:
        is_hdf5 = h5py.is_hdf5(source)
    except OSError as exc:
        raise InvalidObservations(f"{source}: cannot read the file ({exc})") from None
    if not is_hdf5:
        raise InvalidObservations(f"{source}: not an HDF5 file (no HDF5 signature)")
    try:
        f = h5py.File(source, "r")
    except OSError as exc:
        raise InvalidObservations(
            f"{source}: cannot open as HDF5, the file is truncated or corrupt ({exc})") from None
    reader = SafeReader(f, source, max_values)
    try:
        with f:
            obs = _read(reader)
    except InvalidObservations:
        raise
    except Exception as exc:  # h5py/HDF5 errors on a corrupt file: still the user's file
        raise InvalidObservations(
            f"{reader.where}: unreadable ({type(exc).__name__}: {exc})") from None
    return obs, reader


def read_observations(path: str | os.PathLike[str], *,
                      max_values: int = MAX_VALUES) -> Observations:
    """Read an observations file and check every rule that needs no system, without
    looking up or building the system it names (``physode inspect`` shows a file whose
    system is not installed). :func:`load_observations` also checks the system's layout."""
    obs, _ = _open(path, max_values)
    raise_if(violations(obs, None, str(path), resolve=False), str(path))
    return obs


def load_observations(path: str | os.PathLike[str], system: System | str | None = None, *,
                      max_values: int = MAX_VALUES) -> Observations:
    """Read and validate an observations file; raise :class:`InvalidObservations` (naming
    the file, group and dataset) on any violation of the schema.

    ``system``: the system the data are for, an instance (for systems the registry cannot
    build without arguments) or a name you give (registry name or
    ``"package.module:Class"``); a file labelled with another system is refused. By
    default the file's ``system`` attribute is looked up in the registry (never imported).
    ``max_values``: the most values the file may declare (default :data:`MAX_VALUES`)."""
    source = str(path)
    if isinstance(system, str):
        system = registry.get(system)
    obs, reader = _open(path, max_values)
    found: list[str] = []
    if system is None:
        try:
            system = resolve_system(obs.system, source, system_args(obs, source))
        except InvalidObservations as exc:
            found.append(str(exc))
    else:
        mismatch = name_mismatch(obs.system, system, source)
        if mismatch is not None:
            raise InvalidObservations(mismatch)
    found += violations(obs, system, source, resolve=False)
    for (exp_name, var), dims in reader.dims.items():
        if dims is None:
            continue
        where = f"{location(source, f'/experiments/{exp_name}/values', var)}: attribute 'dims'"
        sv = system.output_var(var) if system is not None else None
        if sv is not None and dims != ("time", *sv.dims):
            found.append(f"{where} {list(dims)} does not match the system's "
                         f"{['time', *sv.dims]}")
        elif sv is None and len(dims) != obs[exp_name].values[var].ndim:
            found.append(f"{where} names {len(dims)} dimension(s) for data of shape "
                         f"{obs[exp_name].values[var].shape}")
    raise_if(found, source)
    return obs


def _read(r: SafeReader) -> Observations:
    f = r.f
    r.at("/")
    schema = r.str_attr(f, "schema")
    if schema != SCHEMA_NAME:
        raise r.fail(f"not a physode observations file (root attribute 'schema' is {schema!r}, "
                     f"expected {SCHEMA_NAME!r})")
    if "schema_version" not in f.attrs:
        raise r.fail("missing root attribute 'schema_version'")
    version = r.attr(f, "schema_version")
    if not isinstance(version, (int, np.integer)) or isinstance(version, (bool, np.bool_)):
        raise r.fail(f"root attribute 'schema_version' must be an integer, got {version!r}")
    version = int(version)
    if version > SCHEMA_VERSION:
        raise r.fail(f"schema version {version} is newer than this physode supports "
                     f"({SCHEMA_VERSION}); upgrade physode to read this file")
    if version < 1:
        raise r.fail(f"invalid schema version {version}")
    system = r.str_attr(f, "system", required=True) or ""
    creator = r.str_attr(f, "creator") or ""
    metadata = r.metadata(f, skip=RESERVED_ROOT_ATTRS)
    r.unexpected(f, "/", ("parameters", "experiments", "declarations"))
    declarations = read_declarations(r, f)

    parameters: dict[str, np.ndarray] = {}
    parameter_units: dict[str, str] = {}
    pg = r.group(f, "parameters", "/parameters", required=False)
    if pg is not None:
        names = r.names_attr(pg, "/parameters", "names")
        r.unexpected(pg, "/parameters", names)
        for name in names:
            parameters[name] = r.dataset(pg, "/parameters", name)
            u = r.str_attr(r.member(pg, name), "units")
            if u is not None:
                parameter_units[name] = u

    eg = r.group(f, "experiments", "/experiments")
    names = r.names_attr(eg, "/experiments", "names")
    r.unexpected(eg, "/experiments", names)
    if not names:
        raise r.fail("no experiments")
    units: dict[str, str] = {}
    time_units: list[str | None] = []
    seen: dict[Any, str] = {}
    experiments = []
    for name in names:
        g = r.group(eg, name, f"/experiments/{name}")
        if g.id in seen:
            raise r.fail(f"experiments {seen[g.id]!r} and {name!r} are the same HDF5 group "
                         "(a hard or soft link); store each experiment once")
        seen[g.id] = name
        experiments.append(_read_experiment(r, g, name, units, time_units))
    if len(set(time_units)) > 1:
        r.at("/experiments")
        raise r.fail(f"experiments disagree on the time units: {sorted(map(str, time_units))}")
    return Observations(system=system, experiments=experiments, units=units,
                        time_units=time_units[0], parameters=parameters,
                        parameter_units=parameter_units, metadata=metadata, creator=creator,
                        schema_version=version, declarations=declarations)


def _time_shape(shape: tuple[int, ...]) -> str | None:
    if len(shape) != 1 or shape[0] == 0:
        return f"times must be a non-empty 1-D array, got shape {shape}"
    return None


def _read_experiment(r: SafeReader, g: Any, name: str, units: dict[str, str],
                     time_units: list[str | None]) -> Experiment:
    gpath = f"/experiments/{name}"
    r.unexpected(g, gpath, ("time", "values", *OPTIONAL_PARTS, *PART_GROUPS))
    r.at(gpath)
    metadata = r.metadata(g)
    t = r.dataset(g, gpath, "time", expect=_time_shape)
    n_t = t.shape[0]
    tds = r.member(g, "time")
    time_units.append(r.str_attr(tds, "units"))
    t0 = None
    if "t0" in tds.attrs:
        raw = np.asarray(r.attr(tds, "t0"))
        if raw.shape != () or raw.dtype.kind not in "fiu":
            raise r.fail(f"attribute 't0' must be a number, got {raw!r}")
        t0 = float(raw)
    vpath = gpath + "/values"
    vg = r.group(g, "values", vpath)
    variables = r.names_attr(vg, vpath, "variables")
    r.unexpected(vg, vpath, variables)
    values: dict[str, np.ndarray] = {}
    index: dict[str, dict[str, np.ndarray]] = {}

    def starts_with_time(shape: tuple[int, ...]) -> str | None:
        if len(shape) < 1 or shape[0] != n_t:
            return f"shape {shape} does not start with the number of times {n_t}"
        return None

    for var in variables:
        values[var] = r.dataset(vg, vpath, var, expect=starts_with_time)
        ds = r.member(vg, var)
        dims = None
        if "dims" in ds.attrs:
            raw = np.asarray(r.attr(ds, "dims")).reshape(-1)
            dims = tuple(x.decode() if isinstance(x, bytes) else str(x) for x in raw.tolist())
        r.dims[(name, var)] = dims
        u = r.str_attr(ds, "units")
        if u is not None:
            if units.get(var, u) != u:
                raise r.fail(f"units {u!r} differ from {units[var]!r} in another experiment")
            units[var] = u
        for key in ds.attrs:
            if key.startswith("index_"):
                raw = np.asarray(r.attr(ds, key))
                if raw.dtype.kind not in "iu" or raw.ndim != 1:
                    raise r.fail(f"attribute {key!r} must be a 1-D integer array, got {raw!r}")
                index.setdefault(var, {})[key[len("index_"):]] = raw.astype(np.int64)
    parts: dict[str, dict[str, np.ndarray]] = {}
    for part in OPTIONAL_PARTS:
        ppath = f"{gpath}/{part}"
        pg = r.group(g, part, ppath, required=False)
        if pg is None:
            continue
        members = r.names_attr(pg, ppath, "variables")
        r.unexpected(pg, ppath, members)
        parts[part] = {m: r.dataset(pg, ppath, m, kind="b" if part == "mask" else "f",
                                    expect=_part_shape(part, values.get(m)))
                       for m in members}
    extra = read_parts(r, g, gpath)
    return Experiment(t=t, values=values, index=index, mask=parts.get("mask", {}),
                      sigma=parts.get("sigma", {}), y0=parts.get("y0"), t0=t0, name=name,
                      metadata=metadata, **extra)


def _part_shape(part: str, values: np.ndarray | None) -> Expect | None:
    """The shape rule of mask/sigma given the values they belong to (checked pre-read)."""
    if values is None or part == "y0":
        return None
    shape = values.shape

    def expect(s: tuple[int, ...]) -> str | None:
        if part == "mask" and s != shape:
            return f"shape {s} differs from the values' shape {shape}"
        allowed = sigma_shapes(shape)
        if part == "sigma" and s not in allowed:
            return (f"shape {s} is none of () (per variable), {allowed[1]} (per component) or "
                    f"{allowed[2]} (per point)")
        return None

    return expect


__all__ = [
    "MAX_ATTRIBUTE_VALUES",
    "MAX_VALUES",
    "load_observations",
    "read_observations",
    "save_observations",
]
