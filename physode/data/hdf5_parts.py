"""Reading and writing the schema-2 parts of an observations file (see datasets/README.md).

Per experiment the optional groups ``noise``, ``conditions``, ``dosing``, ``inputs`` and
``preequilibration``; at the root the optional group ``declarations`` (parameters the
experiments introduce). All of it is numbers and strings: a noise model, a condition or a
prior is described, never named as code. Reading goes through the
:class:`~physode.data.h5safe.SafeReader` like the rest of the file. :mod:`physode.data.hdf5`
calls these functions, passing its own dataset and group constructors (checksummed,
without timestamps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from physode.data.experiment_parts import InputSeries, NoiseSpec
from physode.data.h5safe import SafeReader
from physode.errors import InvalidObservations, PhysodeError
from physode.model.observables import Dose
from physode.model.parameter import Parameter
from physode.model.priors import prior_from

#: Optional per-experiment groups of schema version 2.
PART_GROUPS = ("noise", "conditions", "dosing", "inputs", "preequilibration")

Create = Callable[[Any, str, Any], Any]
Group = Callable[[Any, str], Any]


def _names(names: Any) -> np.ndarray:
    return np.asarray(list(names), dtype=object)


def _attr_value(value: Any) -> Any:
    return value if isinstance(value, str) else np.asarray(value, dtype=np.float64)


# ---------------------------------------------------------------------------- writing
def uses_parts(exp: Any) -> bool:
    """Whether an experiment uses anything of schema version 2."""
    return bool(exp.noise or exp.conditions or exp.dosing or exp.inputs
                or exp.preequilibration is not None)


def write_parts(g: Any, exp: Any, create: Create, group: Group) -> None:
    """Write the schema-2 parts of ``exp`` into its experiment group ``g``."""
    if exp.noise:
        ng = group(g, "noise")
        ng.attrs["variables"] = _names(exp.noise)
        for name, spec in exp.noise.items():
            ab = [np.nan if isinstance(c, str) else float(c) for c in (spec.a, spec.b)]
            ds = create(ng, name, np.asarray(ab, dtype=np.float64))
            ds.attrs["distribution"] = spec.distribution
            ds.attrs["scale"] = spec.scale
            for key, c in (("a", spec.a), ("b", spec.b)):
                if isinstance(c, str):
                    ds.attrs[f"{key}_parameter"] = c
    for part, mapping in (("conditions", exp.conditions),
                          ("preequilibration", exp.preequilibration)):
        if mapping is None or (part == "conditions" and not mapping):
            continue
        cg = group(g, part)
        for key, value in mapping.items():
            cg.attrs[key] = _attr_value(value)
    if exp.dosing:
        dg = group(g, "dosing")
        create(dg, "time", np.asarray([d.time for d in exp.dosing], dtype=np.float64))
        create(dg, "amount", np.asarray([np.nan if isinstance(d.amount, str) else d.amount
                                         for d in exp.dosing], dtype=np.float64))
        dg.attrs["target"] = _names(d.target for d in exp.dosing)
        dg.attrs["index"] = np.asarray([-1 if d.index is None else d.index
                                        for d in exp.dosing], dtype=np.int64)
        dg.attrs["amount_parameter"] = _names(d.amount if isinstance(d.amount, str) else ""
                                              for d in exp.dosing)
    if exp.inputs:
        ig = group(g, "inputs")
        ig.attrs["names"] = _names(exp.inputs)
        for name, series in exp.inputs.items():
            sg = group(ig, name)
            create(sg, "time", series.times)
            create(sg, "values", series.values)
            sg.attrs["kind"] = series.kind


def write_declarations(f: Any, declarations: dict[str, Parameter], create: Create,
                       group: Group) -> None:
    """The root group ``declarations``: one dataset (the value) per parameter, its
    constraints, units and prior as attributes."""
    if not declarations:
        return
    dg = group(f, "declarations")
    dg.attrs["names"] = _names(declarations)
    for name, spec in declarations.items():
        ds = create(dg, name, spec.value.numpy())
        ds.attrs["positive"] = np.int8(spec.positive)
        ds.attrs["fixed"] = np.int8(spec.fixed)
        ds.attrs["scale"] = spec.scale
        if spec.bounds is not None:
            ds.attrs["bounds"] = np.asarray(spec.bounds, dtype=np.float64)
        for key in ("units", "description"):
            text = getattr(spec, key)
            if text:
                ds.attrs[key] = text
        if spec.prior is not None:
            for key, value in spec.prior.describe().items():
                ds.attrs[f"prior_{key}"] = _attr_value(value)


# ---------------------------------------------------------------------------- reading
def _scalar_or_str(r: SafeReader, obj: Any, key: str) -> Any:
    value = r.attr(obj, key)
    if isinstance(value, (bytes, str)):
        return value.decode() if isinstance(value, bytes) else value
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise r.fail(f"attribute {key!r} must be a number or a string, got {value!r}")
    return float(arr) if arr.ndim == 0 else arr.astype(np.float64)


def read_parts(r: SafeReader, g: Any, gpath: str) -> dict[str, Any]:
    """The schema-2 parts of the experiment group ``g`` as Experiment keyword arguments."""
    out: dict[str, Any] = {}
    ng = r.group(g, "noise", f"{gpath}/noise", required=False)
    if ng is not None:
        npath = f"{gpath}/noise"
        members = r.names_attr(ng, npath, "variables")
        r.unexpected(ng, npath, members)
        noise = {}
        for name in members:
            ab = r.dataset(ng, npath, name, expect=lambda s: None if s == (2,) else
                           f"shape {s}: expected (2,) = (a, b)")
            ds = r.member(ng, name)
            coef = [r.str_attr(ds, f"{k}_parameter") or float(ab[i])
                    for i, k in enumerate("ab")]
            try:
                noise[name] = NoiseSpec(r.str_attr(ds, "distribution") or "normal",
                                        r.str_attr(ds, "scale") or "lin", coef[0], coef[1])
            except InvalidObservations as exc:
                raise r.fail(str(exc)) from None
        out["noise"] = noise
    for part in ("conditions", "preequilibration"):
        cg = r.group(g, part, f"{gpath}/{part}", required=False)
        if cg is None:
            continue
        r.unexpected(cg, f"{gpath}/{part}", ())
        out[part] = {key: _scalar_or_str(r, cg, key) for key in cg.attrs}
    dg = r.group(g, "dosing", f"{gpath}/dosing", required=False)
    if dg is not None:
        out["dosing"] = _read_dosing(r, dg, f"{gpath}/dosing")
    ig = r.group(g, "inputs", f"{gpath}/inputs", required=False)
    if ig is not None:
        ipath = f"{gpath}/inputs"
        names = r.names_attr(ig, ipath, "names")
        r.unexpected(ig, ipath, names)
        inputs = {}
        for name in names:
            sg = r.group(ig, name, f"{ipath}/{name}")
            r.unexpected(sg, f"{ipath}/{name}", ("time", "values"))
            t = r.dataset(sg, f"{ipath}/{name}", "time")
            v = r.dataset(sg, f"{ipath}/{name}", "values")
            r.at(f"{ipath}/{name}")
            try:
                inputs[name] = InputSeries(t, v, r.str_attr(sg, "kind") or "linear")
            except InvalidObservations as exc:
                raise r.fail(str(exc)) from None
        out["inputs"] = inputs
    return out


def _read_dosing(r: SafeReader, dg: Any, path: str) -> list[Dose]:
    r.unexpected(dg, path, ("time", "amount"))
    t = r.dataset(dg, path, "time", expect=lambda s: None if len(s) == 1 else
                  f"shape {s}: expected (n_doses,)")
    n = t.shape[0]
    amount = r.dataset(dg, path, "amount", expect=lambda s: None if s == (n,) else
                       f"shape {s}: expected ({n},)")
    r.at(path)
    targets = [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(
        r.attr(dg, "target")).reshape(-1).tolist()] if "target" in dg.attrs else []
    index = np.asarray(r.attr(dg, "index")).reshape(-1) if "index" in dg.attrs else \
        np.full(n, -1)
    params = [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(
        r.attr(dg, "amount_parameter")).reshape(-1).tolist()] if "amount_parameter" in \
        dg.attrs else [""] * n
    if len(targets) != n or index.shape != (n,) or len(params) != n:
        raise r.fail(f"attributes 'target', 'index' and 'amount_parameter' must have one "
                     f"entry per dose ({n})")
    try:
        return [Dose(float(t[i]), params[i] or float(amount[i]), targets[i],
                     None if int(index[i]) < 0 else int(index[i])) for i in range(n)]
    except (PhysodeError, ValueError) as exc:
        raise r.fail(f"bad dose: {exc}") from None


def read_declarations(r: SafeReader, f: Any) -> dict[str, Parameter]:
    """The root group ``declarations`` (absent: none)."""
    dg = r.group(f, "declarations", "/declarations", required=False)
    if dg is None:
        return {}
    names = r.names_attr(dg, "/declarations", "names")
    r.unexpected(dg, "/declarations", names)
    out = {}
    for name in names:
        value = r.dataset(dg, "/declarations", name)
        ds = r.member(dg, name)
        prior_data = {k[len("prior_"):]: _scalar_or_str(r, ds, k) for k in ds.attrs
                      if k.startswith("prior_")}
        try:
            prior = prior_from(prior_data, f"{r.where}: prior") if prior_data else None
            bounds = tuple(np.asarray(r.attr(ds, "bounds")).tolist()) if "bounds" in ds.attrs \
                else None
            out[name] = Parameter(
                value, positive=bool(r.attr(ds, "positive")) if "positive" in ds.attrs else
                False, fixed=bool(r.attr(ds, "fixed")) if "fixed" in ds.attrs else False,
                bounds=bounds, scale=r.str_attr(ds, "scale") or "linear",
                units=r.str_attr(ds, "units"), description=r.str_attr(ds, "description"),
                prior=prior, name=name)
        except PhysodeError as exc:
            raise r.fail(str(exc)) from None
    return out


__all__ = ["PART_GROUPS", "read_declarations", "read_parts", "uses_parts", "write_declarations",
           "write_parts"]
