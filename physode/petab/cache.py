"""Generated model code, cached on disk: :func:`load_model` -> :class:`GeneratedModel`.

The first load of a model reads the SBML (libsbml), builds the sympy model, parses the
observable formulas and writes the generated torch module (:mod:`physode.petab.codegen`)
to ``<cache>/<sha256>.py``, the key hashing the SBML bytes, the observable and noise
formulas and the code generator's version. A later load with the same inputs imports
that file directly and touches neither sympy nor libsbml. The cache folder is
``$PHYSODE_CACHE_DIR/petab`` when that variable is set, else
``$XDG_CACHE_HOME/physode/petab`` (``~/.cache/physode/petab``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import Tensor

from physode.data.atomic import atomic_path
from physode.errors import InvalidSystem
from physode.paths import cache_root

CODEGEN_VERSION = 6  # equals codegen.VERSION; kept here so a cache hit needs no sympy

Observable = tuple[str, str, str]  # (id, formula, noise formula)


def cache_dir() -> Path:
    """The folder holding generated model modules (created on demand)."""
    return cache_root() / "petab"


def cache_key(sbml: bytes, observables: Sequence[Observable]) -> str:
    """sha256 over what the generated code depends on."""
    h = hashlib.sha256()
    h.update(f"physode-petab-codegen-{CODEGEN_VERSION}\n".encode())
    h.update(sbml)
    h.update(json.dumps([list(o) for o in observables]).encode())
    return h.hexdigest()


@dataclass
class GeneratedModel:
    """The functions and metadata of one generated module."""

    module: ModuleType
    path: Path
    id: str
    states: list[str]
    parameters: list[str]
    defaults: list[float]
    extras: list[str]
    observables: list[str]
    species: list[str]
    n_breakpoints: int
    generated: bool  # True when this load generated the code (a cache miss)

    @property
    def rhs(self) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        f: Callable[[Tensor, Tensor, Tensor], Tensor] = self.module.rhs
        return f

    @property
    def jacobian(self) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        f: Callable[[Tensor, Tensor, Tensor], Tensor] = self.module.jacobian
        return f

    @property
    def param_jacobian(self) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        f: Callable[[Tensor, Tensor, Tensor], Tensor] = self.module.param_jacobian
        return f

    @property
    def time_derivative(self) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        f: Callable[[Tensor, Tensor, Tensor], Tensor] = self.module.time_derivative
        return f

    @property
    def autonomous(self) -> bool:
        return bool(self.module.AUTONOMOUS)

    def initial(self, p: Tensor) -> Tensor:
        out: Tensor = self.module.initial(p)
        return out

    def breakpoints(self, p: Tensor) -> list[Any]:
        out: list[Any] = self.module.breakpoints(p)
        return out

    def observable(self, k: int) -> Callable[..., Any]:
        f: Callable[..., Any] = getattr(self.module, f"observable_{k}")
        return f

    def sigma(self, k: int) -> Callable[..., Any]:
        f: Callable[..., Any] = getattr(self.module, f"sigma_{k}")
        return f


def _import(path: Path, key: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"physode_petab_model_{key[:16]}", path)
    if spec is None or spec.loader is None:
        raise InvalidSystem(f"{path}: cannot import the generated model code")
    name = spec.name
    if name in sys.modules:  # loaded before in this process (same key: same code)
        return sys.modules[name]
    module = importlib.util.module_from_spec(spec)
    # registered like any imported module: torch.compile (dynamo) looks functions'
    # modules up by name in sys.modules when it traces them
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _placeholders(text: str, kind: str, obs_id: str) -> int:
    found = [int(m) for m in re.findall(rf"\b{kind}(\d+)_{re.escape(obs_id)}\b", text)]
    return max(found, default=0)


def _build(sbml_path: Path, observables: Sequence[Observable]) -> str:
    """Generate the module source (the slow path: sympy and libsbml)."""
    import sympy as sp
    from petab.v1.math import sympify_petab

    from physode.petab.codegen import ObservableSpec, generate
    from physode.petab.sbml import read_sbml

    model = read_sbml(sbml_path)
    known = {*model.states, *model.parameters}
    specs: list[ObservableSpec] = []
    extras: list[str] = []
    formulas = {oid: f for oid, f, _ in observables}

    def parse(text: str, obs_id: str, what: str) -> sp.Expr:
        try:
            expr = sympify_petab(text)
        except Exception as exc:  # petab raises several kinds for a bad formula
            raise InvalidSystem(f"observable {obs_id!r}: cannot parse the {what} {text!r} "
                                f"({exc})") from None
        subs = {s: sp.Symbol(s.name, real=True) for s in expr.free_symbols}
        return sp.sympify(expr.xreplace(subs))

    for oid, formula, noise in observables:
        f_expr = model.expand(parse(formula, oid, "observableFormula"))
        n_expr = parse(noise, oid, "noiseFormula")
        n_expr = n_expr.xreplace({sp.Symbol(o, real=True): model.expand(parse(formulas[o], o,
                                                                             "formula"))
                                  for o in formulas if sp.Symbol(o, real=True)
                                  in n_expr.free_symbols})
        n_expr = model.expand(n_expr)
        n_op = _placeholders(formula + " " + noise, "observableParameter", oid)
        n_np = _placeholders(noise, "noiseParameter", oid)
        for e in (f_expr, n_expr):
            for s in sorted(e.free_symbols, key=lambda s: s.name):
                name = s.name
                if name == "time" or name in known or name in extras:
                    continue
                if re.match(rf"(observable|noise)Parameter\d+_{re.escape(oid)}$", name):
                    continue
                extras.append(name)
        specs.append(ObservableSpec(oid, f_expr, n_expr, n_op, n_np))
    return generate(model, specs, extras)


def load_model(sbml_path: str | os.PathLike[str],
               observables: Sequence[Observable]) -> GeneratedModel:
    """The generated code of the SBML model at ``sbml_path`` with ``observables``
    (``(id, formula, noise formula)``), from the cache or generated and cached now."""
    sbml_path = Path(sbml_path)
    try:
        sbml = sbml_path.read_bytes()
    except OSError as exc:
        raise InvalidSystem(f"{sbml_path}: cannot read the SBML model ({exc.strerror})") from None
    key = cache_key(sbml, observables)
    folder = cache_dir()
    path = folder / f"m{key}.py"
    generated = False
    if not path.exists():
        source = _build(sbml_path, observables)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(source)
        generated = True
    module = _import(path, key)
    meta = json.loads(module.META)
    params = meta["parameters"]
    return GeneratedModel(module=module, path=path, id=meta["model"], states=meta["states"],
                          parameters=[p[0] for p in params],
                          defaults=[float(p[1]) for p in params], extras=meta["extras"],
                          observables=meta["observables"], species=meta["species"],
                          n_breakpoints=int(meta["n_breakpoints"]), generated=generated)


__all__ = ["GeneratedModel", "cache_dir", "cache_key", "load_model"]
