"""What generated model code calls besides torch operators: scalar-or-tensor math helpers.

Generated expressions mix tensors (states, parameters, time) with Python numbers, and a
sub-expression may be a plain number (``exp(2)``, a constant piece of a piecewise). These
helpers take either, return a Python float for numbers (so constant folding stays exact)
and a tensor otherwise; numbers that must become tensors become float64, the dtype of a
fit. Kept free of sympy and libsbml so that loading cached code imports neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

Num = Tensor | float | int | bool


def _dtype(*xs: Any) -> torch.dtype:
    for x in xs:
        if isinstance(x, Tensor) and x.is_floating_point():
            return x.dtype
    return torch.float64


def _t(x: Num, dtype: torch.dtype) -> Tensor:
    return x if isinstance(x, Tensor) else torch.tensor(x, dtype=dtype)


def _unary(tfn: Any, mfn: Any) -> Any:
    def f(x: Num) -> Num:
        return tfn(x) if isinstance(x, Tensor) else mfn(x)
    f.__name__ = tfn.__name__
    return f


exp = _unary(torch.exp, math.exp)
log = _unary(torch.log, math.log)
sqrt = _unary(torch.sqrt, math.sqrt)
sin = _unary(torch.sin, math.sin)
cos = _unary(torch.cos, math.cos)
tan = _unary(torch.tan, math.tan)
sinh = _unary(torch.sinh, math.sinh)
cosh = _unary(torch.cosh, math.cosh)
tanh = _unary(torch.tanh, math.tanh)
asin = _unary(torch.asin, math.asin)
acos = _unary(torch.acos, math.acos)
atan = _unary(torch.atan, math.atan)
asinh = _unary(torch.asinh, math.asinh)
acosh = _unary(torch.acosh, math.acosh)
atanh = _unary(torch.atanh, math.atanh)
abs_ = _unary(torch.abs, abs)
floor = _unary(torch.floor, math.floor)
ceil = _unary(torch.ceil, math.ceil)
sign = _unary(torch.sign, lambda x: float((x > 0) - (x < 0)))


def where(cond: Num, a: Num, b: Num) -> Num:
    """``a`` where ``cond`` else ``b`` (a piecewise piece); numbers stay numbers."""
    if not isinstance(cond, Tensor):
        return a if cond else b
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        dtype = _dtype(a, b)
        a, b = _t(a, dtype), _t(b, dtype)
    return torch.where(cond, a, b)


def _binary(tfn: Any, pfn: Any) -> Any:
    def f(a: Num, b: Num) -> Num:
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            dtype = _dtype(a, b)
            return tfn(_t(a, dtype), _t(b, dtype))
        return pfn(a, b)
    return f


maximum = _binary(torch.maximum, max)
minimum = _binary(torch.minimum, min)
logical_and = _binary(torch.logical_and, lambda a, b: bool(a) and bool(b))
logical_or = _binary(torch.logical_or, lambda a, b: bool(a) or bool(b))
logical_xor = _binary(torch.logical_xor, lambda a, b: bool(a) != bool(b))


def logical_not(a: Num) -> Num:
    return torch.logical_not(a) if isinstance(a, Tensor) else not a


def heaviside(x: Num) -> Num:
    """H(x) with H(0) = 1/2."""
    return where(x > 0, 1.0, where(x < 0, 0.0, 0.5))


def stack(values: Sequence[Num], like: Tensor) -> Tensor:
    """The entries (tensors or numbers) stacked on a new last axis, each broadcast to
    ``like``'s shape."""
    shape = like.shape
    if all(isinstance(v, Tensor) and v.shape == shape for v in values) and values:
        return torch.stack(values, dim=-1)  # type: ignore[arg-type]
    shapes = [v.shape for v in values if isinstance(v, Tensor) and v.shape != shape]
    if shapes:
        shape = torch.broadcast_shapes(shape, *shapes)
    parts = [v.expand(shape) if isinstance(v, Tensor) else like.new_full(shape, float(v))
             for v in values]
    if not parts:
        return like.new_zeros((*shape, 0))
    return torch.stack(parts, dim=-1)


__all__ = ["abs_", "acos", "acosh", "asin", "asinh", "atan", "atanh", "ceil", "cos", "cosh",
           "exp", "floor", "heaviside", "log", "logical_and", "logical_not", "logical_or",
           "logical_xor", "maximum", "minimum", "sign", "sin", "sinh", "sqrt", "stack", "tan",
           "tanh", "where"]
