"""SBML math (libsbml ``ASTNode`` trees) to sympy expressions.

The tree is walked node by node rather than printed to a string and re-parsed, so an SBML
identifier that happens to be a sympy name (``E``, ``I``, ``beta``, ``lambda``) stays a plain
symbol, and every construct outside the supported set is refused by name. This is the
route AMICI takes as well (Fröhlich et al., "AMICI: high-performance sensitivity analysis
for large ordinary differential equation models", Bioinformatics 37:3676, 2021): MathML to
sympy, then code generation from the sympy expressions.

Supported: arithmetic, powers and roots, exp/ln/log, trigonometric and hyperbolic
functions, abs/floor/ceiling, min/max, piecewise with relational and logical conditions,
the time csymbol, the constants pi, e, true, false and Avogadro's number, and calls of
``functionDefinition`` lambdas (expanded in place). ``delay`` and ``rateOf`` are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import libsbml
import sympy as sp

from physode.errors import InvalidSystem

#: the independent variable of every generated model
TIME = sp.Symbol("time", real=True)

_AVOGADRO = 6.02214076e23

Lambda = tuple[tuple[sp.Symbol, ...], sp.Expr]


def _code(name: str) -> int | None:
    value = getattr(libsbml, name, None)
    return int(value) if value is not None else None


_UNARY: dict[str, Callable[[Any], Any]] = {
    "AST_FUNCTION_EXP": sp.exp, "AST_FUNCTION_LN": sp.log, "AST_FUNCTION_ABS": sp.Abs,
    "AST_FUNCTION_FLOOR": sp.floor, "AST_FUNCTION_CEILING": sp.ceiling,
    "AST_FUNCTION_SIN": sp.sin, "AST_FUNCTION_COS": sp.cos, "AST_FUNCTION_TAN": sp.tan,
    "AST_FUNCTION_SINH": sp.sinh, "AST_FUNCTION_COSH": sp.cosh, "AST_FUNCTION_TANH": sp.tanh,
    "AST_FUNCTION_ARCSIN": sp.asin, "AST_FUNCTION_ARCCOS": sp.acos,
    "AST_FUNCTION_ARCTAN": sp.atan, "AST_FUNCTION_ARCSINH": sp.asinh,
    "AST_FUNCTION_ARCCOSH": sp.acosh, "AST_FUNCTION_ARCTANH": sp.atanh,
    "AST_FUNCTION_SEC": sp.sec, "AST_FUNCTION_CSC": sp.csc, "AST_FUNCTION_COT": sp.cot,
    "AST_FUNCTION_FACTORIAL": sp.factorial, "AST_LOGICAL_NOT": sp.Not,
}
_RELATIONAL: dict[str, Callable[[Any, Any], Any]] = {
    "AST_RELATIONAL_EQ": sp.Eq, "AST_RELATIONAL_NEQ": sp.Ne, "AST_RELATIONAL_LT": sp.Lt,
    "AST_RELATIONAL_LEQ": sp.Le, "AST_RELATIONAL_GT": sp.Gt, "AST_RELATIONAL_GEQ": sp.Ge,
}
_UNARY_CODES = {c: f for n, f in _UNARY.items() if (c := _code(n)) is not None}
_RELATIONAL_CODES = {c: f for n, f in _RELATIONAL.items() if (c := _code(n)) is not None}
_REFUSED = {c: n for n in ("AST_FUNCTION_DELAY", "AST_FUNCTION_RATE_OF", "AST_CSYMBOL_FUNCTION",
                           "AST_LAMBDA") if (c := _code(n)) is not None}
_NAMES = {n: _code(n) for n in (
    "AST_PLUS", "AST_MINUS", "AST_TIMES", "AST_DIVIDE", "AST_POWER", "AST_FUNCTION_POWER",
    "AST_FUNCTION_ROOT", "AST_FUNCTION_LOG", "AST_INTEGER", "AST_REAL", "AST_REAL_E",
    "AST_RATIONAL", "AST_NAME", "AST_NAME_TIME", "AST_NAME_AVOGADRO", "AST_CONSTANT_E",
    "AST_CONSTANT_PI", "AST_CONSTANT_TRUE", "AST_CONSTANT_FALSE", "AST_FUNCTION",
    "AST_FUNCTION_PIECEWISE", "AST_LOGICAL_AND", "AST_LOGICAL_OR", "AST_LOGICAL_XOR",
    "AST_FUNCTION_MAX", "AST_FUNCTION_MIN", "AST_FUNCTION_QUOTIENT", "AST_FUNCTION_REM")}


class MathConverter:
    """Converts the math of one model; ``where`` strings name the element in errors.

    Args:
        model: the model's id (for error messages).
        functions: ``{functionDefinition id: (argument symbols, body)}``.
        symbol: maps an SBML identifier to its sympy symbol (one symbol per id).
    """

    def __init__(self, model: str, functions: Mapping[str, Lambda],
                 symbol: Callable[[str], sp.Symbol]) -> None:
        self.model = model
        self.functions = functions
        self.symbol = symbol

    def convert(self, node: libsbml.ASTNode | None, where: str) -> sp.Expr:
        """The sympy expression of ``node`` (the math of element ``where``)."""
        if node is None:
            raise InvalidSystem(f"SBML model {self.model!r}: {where} has no math")
        return self._node(node, where)

    def _error(self, where: str, what: str) -> InvalidSystem:
        return InvalidSystem(f"SBML model {self.model!r}: {where} uses {what}, which physode "
                             "does not support")

    def _node(self, node: libsbml.ASTNode, where: str) -> Any:
        kind = node.getType()
        kids = [self._node(node.getChild(i), where) for i in range(node.getNumChildren())]
        if kind in _REFUSED:
            name = _REFUSED[kind].removeprefix("AST_").lower()
            raise self._error(where, f"'{name}' ({node.getName() or name})")
        if kind in _UNARY_CODES:
            return _UNARY_CODES[kind](kids[0])
        if kind in _RELATIONAL_CODES:
            rel = _RELATIONAL_CODES[kind]
            if len(kids) == 2:
                return rel(kids[0], kids[1])
            return sp.And(*(rel(a, b) for a, b in zip(kids, kids[1:])))
        return self._other(kind, node, kids, where)

    def _other(self, kind: int, node: libsbml.ASTNode, kids: list[Any], where: str) -> Any:
        n = _NAMES
        if kind == n["AST_PLUS"]:
            return sp.Add(*kids) if kids else sp.Integer(0)
        if kind == n["AST_TIMES"]:
            return sp.Mul(*kids) if kids else sp.Integer(1)
        if kind == n["AST_MINUS"]:
            return -kids[0] if len(kids) == 1 else kids[0] - kids[1]
        if kind == n["AST_DIVIDE"]:
            return kids[0] / kids[1]
        if kind in (n["AST_POWER"], n["AST_FUNCTION_POWER"]):
            return kids[0] ** kids[1]
        if kind == n["AST_FUNCTION_ROOT"]:
            return kids[-1] ** (1 / kids[0]) if len(kids) == 2 else sp.sqrt(kids[0])
        if kind == n["AST_FUNCTION_LOG"]:  # log with a logbase child, else base 10
            return sp.log(kids[-1], kids[0]) if len(kids) == 2 else sp.log(kids[0], 10)
        if kind == n["AST_INTEGER"]:
            return sp.Integer(node.getInteger())
        if kind in (n["AST_REAL"], n["AST_REAL_E"]):
            return sp.Float(node.getReal())
        if kind == n["AST_RATIONAL"]:
            return sp.Rational(node.getNumerator(), node.getDenominator())
        if kind == n["AST_NAME"]:
            return self.symbol(node.getName())
        if kind == n["AST_NAME_TIME"]:
            return TIME
        if kind == n["AST_NAME_AVOGADRO"]:
            return sp.Float(_AVOGADRO)
        if kind == n["AST_CONSTANT_E"]:
            return sp.E
        if kind == n["AST_CONSTANT_PI"]:
            return sp.pi
        if kind == n["AST_CONSTANT_TRUE"]:
            return sp.true
        if kind == n["AST_CONSTANT_FALSE"]:
            return sp.false
        if kind == n["AST_LOGICAL_AND"]:
            return sp.And(*kids)
        if kind == n["AST_LOGICAL_OR"]:
            return sp.Or(*kids)
        if kind == n["AST_LOGICAL_XOR"]:
            return sp.Xor(*kids)
        if kind == n["AST_FUNCTION_MAX"]:
            return sp.Max(*kids)
        if kind == n["AST_FUNCTION_MIN"]:
            return sp.Min(*kids)
        if kind == n["AST_FUNCTION_QUOTIENT"]:
            return sp.floor(kids[0] / kids[1])
        if kind == n["AST_FUNCTION_REM"]:
            return kids[0] - kids[1] * sp.floor(kids[0] / kids[1])
        if kind == n["AST_FUNCTION_PIECEWISE"]:
            return _piecewise(kids)
        if kind == n["AST_FUNCTION"]:
            return self._call(node.getName(), kids, where)
        raise self._error(where, f"the MathML element {node.getName() or kind!r}")

    def _call(self, name: str, args: list[Any], where: str) -> Any:
        if name not in self.functions:
            raise InvalidSystem(f"SBML model {self.model!r}: {where} calls {name!r}, which is "
                                "not a functionDefinition of the model")
        params, body = self.functions[name]
        if len(params) != len(args):
            raise InvalidSystem(f"SBML model {self.model!r}: {where} calls {name!r} with "
                                f"{len(args)} arguments; it takes {len(params)}")
        return body.xreplace(dict(zip(params, args)))

    def function_definition(self, fd: libsbml.FunctionDefinition) -> Lambda:
        """``(argument symbols, body)`` of a functionDefinition; arguments are fresh
        dummies so that they never capture a model symbol of the same name."""
        where = f"functionDefinition {fd.getId()!r}"
        math = fd.getMath()
        if math is None or math.getType() != _code("AST_LAMBDA"):
            raise InvalidSystem(f"SBML model {self.model!r}: {where} is not a lambda")
        n_args = math.getNumChildren() - 1
        names = [math.getChild(i).getName() for i in range(n_args)]
        dummies = {name: sp.Dummy(name) for name in names}
        outer = self.symbol
        self.symbol = lambda s: dummies[s] if s in dummies else outer(s)
        try:
            body = self._node(math.getChild(n_args), where)
        finally:
            self.symbol = outer
        return tuple(dummies[name] for name in names), body


def _piecewise(kids: list[Any]) -> Any:
    """MathML piecewise: (value, condition) pieces then an optional otherwise value."""
    pieces = [(kids[i], kids[i + 1]) for i in range(0, len(kids) - 1, 2)]
    if len(kids) % 2 == 1:
        pieces.append((kids[-1], sp.true))
    else:  # no otherwise: SBML leaves it undefined; NaN makes a use of it visible
        pieces.append((sp.nan, sp.true))
    return sp.Piecewise(*pieces)


__all__ = ["TIME", "Lambda", "MathConverter"]
