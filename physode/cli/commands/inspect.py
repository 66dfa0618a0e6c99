"""``physode inspect FILE``: summarise an observations file (.h5) or a netCDF result (.nc).

An observations file is read with :func:`physode.data.hdf5.read_observations`, which checks
the file but neither imports nor builds the system it names: a file whose system is not
installed is still shown (the name marked as unknown), and a file never runs code.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from physode.cli.base import command
from physode.errors import InvalidArgument

NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf")


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="observations (.h5) or netCDF (.nc) file")


def _fmt(value: Any) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return f"{arr.item():.6g}" if arr.dtype.kind == "f" else str(arr.item())
    return "[" + ", ".join(_fmt(v) for v in arr.reshape(-1)[:8]) + (
        ", ..." if arr.size > 8 else "") + "]"


def _is_observations(path: Path) -> bool:
    """Whether ``path`` claims to be a physode observations file (root 'schema' attr),
    as opposed to another HDF5 file such as netCDF-4. Only the root's own attributes and
    hard-linked members are looked at: no link out of the file is followed."""
    import h5py

    from physode.data.schema import SCHEMA_NAME

    try:
        if not h5py.is_hdf5(path):
            return True  # let the validated reader say what is wrong
        with h5py.File(path, "r") as f:
            schema = _small_attr(f, "schema")
            members = [f[name] for name in f
                       if isinstance(f.get(name, getlink=True), h5py.HardLink)]
            is_netcdf = "_NCProperties" in f.attrs or any(
                "DIMENSION_LIST" in obj.attrs or _small_attr(obj, "CLASS") == b"DIMENSION_SCALE"
                for obj in members)
            return schema in (SCHEMA_NAME, SCHEMA_NAME.encode()) or not is_netcdf
    except OSError:
        return True


def _small_attr(obj: Any, key: str) -> Any:
    """Attribute ``key`` of ``obj`` if present and small (its size is checked first)."""
    if key not in obj.attrs:
        return None
    shape = obj.attrs.get_id(key).shape
    if shape is not None and int(np.prod(shape)) > 64:
        return None
    return obj.attrs[key]


def _system_note(name: str) -> str:
    """`` (not a registered system here)`` when the registry does not know ``name``."""
    from physode.errors import PhysodeError
    from physode.model import registry

    try:
        registry.resolve(name, references=False)
    except PhysodeError:
        return " (not a registered system here: shown without checking its layout)"
    return ""


def inspect_observations(path: Path) -> None:
    from physode.data.hdf5 import read_observations

    obs = read_observations(path)
    print(f"{path}: physode observations (schema {obs.schema_version}), system "
          f"{obs.system!r}{_system_note(obs.system)}, creator {obs.creator!r}")
    tu = f" {obs.time_units}" if obs.time_units else ""
    print(f"experiments: {len(obs)}")
    for exp in obs.experiments:
        y0 = "known" if exp.y0 else "unknown"
        print(f"  {exp.name}: {exp.t.size} times in [{exp.t[0]:.6g}, {exp.t[-1]:.6g}]{tu}, "
              f"t0 {exp.t0:.6g}, initial state {y0}")
        for name, v in exp.values.items():
            units = obs.units.get(name, "-")
            idx = exp.index.get(name, {})
            part = "".join(f", {d}={p.tolist()}" for d, p in idx.items())
            missing = int(exp.mask[name].sum()) if name in exp.mask else 0
            s = exp.sigma.get(name)
            sigma = "none" if s is None else (
                _fmt(s) if s.ndim == 0 else f"per {'point' if s.shape == v.shape else 'component'}"
                f" ({_fmt(s.min())}..{_fmt(s.max())})")
            print(f"    {name}: shape {v.shape} {v.dtype}, units {units}{part}, sigma {sigma}, "
                  f"missing {missing}")
    if obs.parameters:
        print("parameters (known values):")
        for name, value in obs.parameters.items():
            units = f" {obs.parameter_units[name]}" if name in obs.parameter_units else ""
            print(f"  {name} = {_fmt(value)}{units}")
    if obs.metadata:
        print("metadata: " + ", ".join(f"{k}={_fmt(v) if not isinstance(v, str) else v}"
                                       for k, v in obs.metadata.items()))


def inspect_netcdf(path: Path) -> None:
    from physode.data.labelled import read_netcdf

    try:
        ds = read_netcdf(path)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"{path}: cannot read as netCDF ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    print(f"{path}: netCDF dataset, system {ds.attrs.get('system', '?')!r}")
    print("dimensions: " + ", ".join(f"{d}={n}" for d, n in ds.sizes.items()))
    if "experiment" in ds.coords:
        print("experiments: " + ", ".join(str(x) for x in ds["experiment"].values.tolist()))
    if "time" in ds.coords and ds.sizes.get("time", 0):
        t = ds["time"].values
        units = ds["time"].attrs.get("units", "")
        print(f"time: {t.size} values in [{_fmt(t.min())}, {_fmt(t.max())}] {units}".rstrip())
    print("variables:")
    for name, da in ds.data_vars.items():
        dims = ", ".join(f"{d}={n}" for d, n in zip(da.dims, da.shape))
        print(f"  {name}: ({dims}) {da.dtype}, units {da.attrs.get('units', '-')}")
    params = {k[len("parameter_"):]: v for k, v in ds.attrs.items()
              if k.startswith("parameter_") and not k.endswith("_units")}
    if params:
        print("parameters: " + ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()))


@command("inspect", "summarise an observations (.h5) or netCDF (.nc) file", _configure)
def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        raise FileNotFoundError(2, "no such file", str(path))
    if path.suffix.lower() in NETCDF_SUFFIXES or not _is_observations(path):
        inspect_netcdf(path)
    else:
        inspect_observations(path)
    return 0
