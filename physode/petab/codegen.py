"""sympy model to torch source: the vector field, its symbolic Jacobian, initial states,
observables, noise formulas and the times of discontinuities, as one Python module.

The generated functions work on the last axis and broadcast over leading ones:
``rhs(t, x, p)``, ``jacobian(t, x, p)`` (``(..., n, n)``, ``J[i, j] = d rhs_i / d x_j``),
``param_jacobian(t, x, p)`` (``(..., n, len(p))``) and the second-derivative blocks of
forward sensitivities (``jacobian_dir``, ``param_jacobian_dir``, ``jacobian_dt``,
``param_jacobian_dt``),
``initial(p)``, ``observable_K(t, x, p, op)``, ``sigma_K(t, x, p, op, np_)`` and
``breakpoints(p)``. Common subexpressions are computed once (sympy's ``cse``), and only
the states and parameters an expression uses are read. The Jacobian is derived
symbolically, as AMICI does (Fröhlich et al., Bioinformatics 37:3676, 2021, sec. 2), so a
Rosenbrock step gets it without automatic differentiation; it is written entry by entry
over its nonzero pattern.

Time discontinuities: a piecewise condition ``g(time, p) op 0`` linear in time with a
state-free slope switches at ``time = -g(0, p) / slope``; those roots are the breakpoints
the solver restarts at (Hairer, Nørsett & Wanner, Solving ODEs I, 2nd ed., sec. II.6:
integrate piecewise smooth problems piece by piece). Conditions on states are left to the
step-size control.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sympy as sp

from physode.errors import InvalidSystem
from physode.petab.mathml import TIME
from physode.petab.sbml import SymbolicModel

#: bump when the generated code changes meaning, so that cached modules are regenerated
VERSION = 6

_FUNCS = {
    sp.exp: "R.exp", sp.log: "R.log", sp.sin: "R.sin", sp.cos: "R.cos", sp.tan: "R.tan",
    sp.sinh: "R.sinh", sp.cosh: "R.cosh", sp.tanh: "R.tanh", sp.asin: "R.asin",
    sp.acos: "R.acos", sp.atan: "R.atan", sp.asinh: "R.asinh", sp.acosh: "R.acosh",
    sp.atanh: "R.atanh", sp.Abs: "R.abs_", sp.floor: "R.floor", sp.ceiling: "R.ceil",
    sp.sign: "R.sign", sp.Heaviside: "R.heaviside",
}
_REL = {sp.StrictLessThan: "<", sp.LessThan: "<=", sp.StrictGreaterThan: ">",
        sp.GreaterThan: ">=", sp.Equality: "==", sp.Unequality: "!="}


class Printer:
    """Prints a sympy expression as Python over the names in ``names``."""

    def __init__(self, names: Mapping[sp.Basic, str], where: str) -> None:
        self.names = names
        self.where = where

    def __call__(self, e: sp.Basic) -> str:
        return self._p(e)

    def _p(self, e: sp.Basic) -> str:  # noqa: C901 - one branch per node type
        if e in self.names:
            return self.names[e]
        if isinstance(e, sp.Symbol):
            raise InvalidSystem(f"{self.where}: unknown symbol {e.name!r}")
        if e is sp.true or e is sp.false:
            return "True" if e is sp.true else "False"
        if e is sp.nan:
            return "float('nan')"
        if isinstance(e, sp.Integer):
            return repr(int(e))
        if e.is_Number or e in (sp.pi, sp.E):
            return repr(float(e))
        if isinstance(e, sp.Add):
            text = ""
            for a in e.args:
                coeff, rest = a.as_coeff_Mul()
                if coeff.is_negative:
                    term = self._p(-a)
                    text = f"{text} - {term}" if text else f"-{term}"
                else:
                    term = self._p(a)
                    text = f"{text} + {term}" if text else term
            return f"({text})"
        if isinstance(e, sp.Mul):
            return self._mul(e)
        if isinstance(e, sp.Pow):
            return self._pow(e)
        if isinstance(e, sp.Piecewise):
            return self._piecewise(e.args)
        if type(e) in _REL:
            return f"({self._p(e.args[0])} {_REL[type(e)]} {self._p(e.args[1])})"
        if isinstance(e, sp.And | sp.Or | sp.Xor):
            fn = {sp.And: "R.logical_and", sp.Or: "R.logical_or", sp.Xor: "R.logical_xor"}
            out = self._p(e.args[0])
            for a in e.args[1:]:
                out = f"{fn[type(e)]}({out}, {self._p(a)})"
            return out
        if isinstance(e, sp.Not):
            return f"R.logical_not({self._p(e.args[0])})"
        if isinstance(e, sp.Max | sp.Min):
            fn2 = "R.maximum" if isinstance(e, sp.Max) else "R.minimum"
            out = self._p(e.args[0])
            for a in e.args[1:]:
                out = f"{fn2}({out}, {self._p(a)})"
            return out
        if isinstance(e, sp.Function) and type(e) in _FUNCS:
            return f"{_FUNCS[type(e)]}({', '.join(self._p(a) for a in e.args)})"
        raise InvalidSystem(f"{self.where}: cannot generate code for {type(e).__name__} "
                            f"in {e}")

    def _mul(self, e: sp.Mul) -> str:
        coeff, rest = e.as_coeff_Mul()
        num: list[str] = []
        den: list[str] = []
        for f in sp.Mul.make_args(rest):
            if isinstance(f, sp.Pow) and f.exp.is_number and f.exp.is_negative:
                den.append(self._p(f.base ** (-f.exp)))
            else:
                num.append(self._p(f))
        text = " * ".join(num) if num else "1.0"
        if den:
            text = f"{text} / " + (den[0] if len(den) == 1 else "(" + " * ".join(den) + ")")
        if coeff == -1:
            return f"(-{text})"
        if coeff != 1:
            return f"({self._p(coeff)} * {text})"
        return f"({text})"

    def _pow(self, e: sp.Pow) -> str:
        base, ex = e.args
        if ex == sp.Rational(1, 2):
            return f"R.sqrt({self._p(base)})"
        if ex == -1:
            return f"(1.0 / {self._p(base)})"
        if isinstance(ex, sp.Integer):
            return f"({self._p(base)} ** {int(ex)})"
        return f"({self._p(base)} ** {self._p(ex)})"

    def _piecewise(self, pieces: Sequence[tuple[sp.Basic, sp.Basic]]) -> str:
        value, cond = pieces[0]
        if cond is sp.true or len(pieces) == 1:
            return self._p(value)
        return f"R.where({self._p(cond)}, {self._p(value)}, {self._piecewise(pieces[1:])})"


@dataclass
class ObservableSpec:
    """One PEtab observable: formula and noise formula as sympy, its placeholder counts."""

    id: str
    formula: sp.Expr
    noise: sp.Expr
    n_obs_params: int
    n_noise_params: int


def _function(name: str, args: str, exprs: Sequence[sp.Expr], names: dict[sp.Basic, str],
              loads: Mapping[sp.Basic, str], where: str, ret: str) -> list[str]:
    """``def name(args):`` reading the used inputs, CSE temporaries, then ``ret`` with
    ``{values}`` replaced by the printed outputs."""
    used = set().union(*(e.free_symbols for e in exprs)) if exprs else set()
    lines = [f"def {name}({args}):"]
    by_source: dict[str, list[tuple[int, sp.Basic]]] = {}
    for sym, load in loads.items():
        if sym in used:
            source, index = load.split("[..., ")
            by_source.setdefault(source, []).append((int(index.rstrip("]")), sym))
    for source, items in by_source.items():
        if len(items) == 1:
            lines.append(f"    {names[items[0][1]]} = {source}[..., {items[0][0]}]")
            continue
        width = max(i for i, _ in items) + 1
        targets = ["_"] * width
        for i, sym in items:
            targets[i] = names[sym]
        lines.append(f"    {', '.join(targets)}, *_ = {source}.unbind(-1)")
    temps, reduced = sp.cse(list(exprs), symbols=sp.numbered_symbols("_c"), order="none")
    printer = Printer(names, where)
    local = dict(names)
    printer.names = local
    for sym, value in temps:
        local[sym] = sym.name
        lines.append(f"    {sym.name} = {printer(value)}")
    values = ", ".join(printer(e) for e in reduced)
    lines.append("    " + ret.replace("{values}", values))
    return lines


def _matrix(name: str, matrix: sp.Matrix, names: dict[sp.Basic, str],
            loads: Mapping[sp.Basic, str], where: str, args: str = "t, x, p") -> list[str]:
    """``def name(args)`` returning the ``(..., rows, cols)`` matrix, written entry by
    entry over its nonzero pattern."""
    rows, cols = matrix.shape
    nz = [(i, j) for i in range(rows) for j in range(cols) if matrix[i, j] != 0]
    flat = [i * cols + j for i, j in nz]
    lines = _function(name, args, [matrix[i, j] for i, j in nz], names, loads, where,
                      "_v = [{values}]")
    return lines + [
        "    _s = torch.broadcast_shapes(x.shape[:-1], p.shape[:-1]"
        + (", u.shape[:-1])" if "u" in args.split(", ") else ")"),
        f"    M = x.new_zeros((*_s, {rows * cols}))",
        f"    M[..., {flat!r}] = R.stack(_v, x.new_zeros(_s))" if nz else "",
        f"    return M.view(*_s, {rows}, {cols})"]


def _second_derivatives(jac: sp.Matrix, fp: sp.Matrix, xs: Sequence[sp.Symbol],
                        names: dict[sp.Basic, str], loads: Mapping[sp.Basic, str],
                        where: str) -> list[str]:
    """The blocks forward sensitivities need beyond ``J`` and ``F = df/dp``
    (:mod:`physode.ode.sensitivity_batch`): their derivatives along a state direction
    ``u``, ``jacobian_dir = sum_k u_k dJ/dx_k`` and ``param_jacobian_dir = sum_k u_k
    dF/dx_k``, and in time, ``jacobian_dt`` and ``param_jacobian_dt``; symbolic, as AMICI
    derives its second-order blocks (Fröhlich et al., Bioinformatics 37:3676, 2021)."""
    us = [sp.Symbol(f"_u{k}", real=True) for k in range(len(xs))]
    names = dict(names)
    loads = dict(loads)
    for k, u in enumerate(us):
        names[u], loads[u] = f"u_{k}", f"u[..., {k}]"

    def along(m: sp.Matrix) -> sp.Matrix:
        return m.applyfunc(lambda e: sum((u * sp.diff(e, x) for u, x in zip(us, xs)
                                          if e.has(x)), sp.Integer(0)))

    lines: list[str] = []
    for name, m in (("jacobian", jac), ("param_jacobian", fp)):
        lines += ["", ""] + _matrix(f"{name}_dir", along(m), names, loads, where,
                                    "t, x, p, u")
        lines += ["", ""] + _matrix(f"{name}_dt", m.diff(TIME), names, loads, where)
    return lines


def time_roots(exprs: Sequence[sp.Expr], states: set[sp.Symbol]) -> list[sp.Expr]:
    """Times (expressions of parameters) at which a piecewise condition in ``exprs``
    switches; see the module docstring."""
    roots: list[sp.Expr] = []
    for e in exprs:
        for pw in e.atoms(sp.Piecewise):
            for _, cond in pw.args:
                for rel in ([cond] if isinstance(cond, sp.core.relational.Relational)
                            else cond.atoms(sp.core.relational.Relational)):
                    g = sp.expand(rel.lhs - rel.rhs)
                    if TIME not in g.free_symbols:
                        continue
                    slope = sp.diff(g, TIME)
                    if slope.free_symbols & (states | {TIME}) or slope == 0:
                        continue
                    root = sp.simplify(-g.subs(TIME, 0) / slope)
                    if root not in roots:
                        roots.append(root)
    return roots


def generate(model: SymbolicModel, observables: Sequence[ObservableSpec],
             extras: Sequence[str]) -> str:
    """The source of the generated module (see the module docstring); ``extras``: names of
    non-model parameters the observables use, appended to ``p`` after the model's."""
    xs = [model.symbol(s) for s in model.states]
    ps = [model.symbol(s) for s in (*model.parameters, *extras)]
    names: dict[sp.Basic, str] = {TIME: "t"}
    x_loads: dict[sp.Basic, str] = {}
    p_loads: dict[sp.Basic, str] = {}
    for i, x in enumerate(xs):
        names[x] = f"x_{i}"
        x_loads[x] = f"x[..., {i}]"
    for j, p in enumerate(ps):
        names[p] = f"p_{j}"
        p_loads[p] = f"p[..., {j}]"
    n = len(xs)
    where = f"SBML model {model.id!r}"
    lines = ["# generated by physode.petab.codegen; do not edit", "import torch", "",
             "from physode.petab import runtime as R", "", ""]
    lines += _function("rhs", "t, x, p", model.rhs, names, {**x_loads, **p_loads}, where,
                       "return R.stack([{values}], x[..., 0])")
    jac = sp.Matrix(model.rhs).jacobian(xs) if n else sp.zeros(0, 0)
    nz = [(i, j) for i in range(n) for j in range(n) if jac[i, j] != 0]
    lines += ["", ""] + _matrix("jacobian", jac, names, {**x_loads, **p_loads}, where)
    fp = sp.Matrix(model.rhs).jacobian(ps) if n else sp.zeros(0, len(ps))
    lines += ["", ""] + _matrix("param_jacobian", fp, names, {**x_loads, **p_loads}, where)
    lines += _second_derivatives(jac, fp, xs, names, {**x_loads, **p_loads}, where)
    lines += ["", ""] + _function("initial", "p", model.initial, names, p_loads, where,
                                  "return R.stack([{values}], p[..., 0])")
    dfdt = [sp.diff(e, TIME) for e in model.rhs]
    lines += ["", ""] + _function("time_derivative", "t, x, p", dfdt, names,
                                  {**x_loads, **p_loads}, where,
                                  "return R.stack([{values}], x[..., 0])")
    autonomous = all(TIME not in e.free_symbols for e in model.rhs)
    lines += ["", "", f"AUTONOMOUS = {autonomous}"]
    roots = time_roots(model.rhs, set(xs))
    lines += ["", ""] + _function("breakpoints", "p", roots, names, p_loads, where,
                                  "return [{values}]")
    for k, obs in enumerate(observables):
        onames = dict(names)
        loads = {**x_loads, **p_loads}
        for i in range(obs.n_obs_params):
            s = sp.Symbol(f"observableParameter{i + 1}_{obs.id}", real=True)
            onames[s], loads[s] = f"op_{i}", f"op[..., {i}]"
        for i in range(obs.n_noise_params):
            s = sp.Symbol(f"noiseParameter{i + 1}_{obs.id}", real=True)
            onames[s], loads[s] = f"np_{i}", f"np_[..., {i}]"
        owhere = f"observable {obs.id!r}"
        lines += ["", ""] + _function(f"observable_{k}", "t, x, p, op", [obs.formula], onames,
                                      loads, owhere, "return {values}")
        lines += ["", ""] + _function(f"sigma_{k}", "t, x, p, op, np_", [obs.noise], onames,
                                      loads, owhere + " (noise formula)", "return {values}")
    meta = {"version": VERSION, "model": model.id, "states": model.states,
            "parameters": list(model.parameters.items()), "extras": list(extras),
            "observables": [o.id for o in observables], "n_breakpoints": len(roots),
            "species": model.species, "jacobian_nonzeros": len(nz)}
    lines += ["", "", f"META = {json.dumps(meta)!r}", ""]
    return "\n".join(lines)


__all__ = ["VERSION", "ObservableSpec", "Printer", "generate", "time_roots"]
