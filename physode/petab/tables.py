"""PEtab tables to index arrays: parameters, conditions and measurements, mapped once.

Every quantity the objective needs per simulation or per measurement (a model parameter
in a condition, an initial state override, an observable or noise parameter of a
measurement row) is either a constant or one entry of the PEtab parameter vector. It is
stored as an index into that vector (``-1``: constant) and a constant, so that the
objective gathers all values in one tensor operation: ``where(idx >= 0, lin[idx], const)``.
PEtab v1 semantics (Schmiester et al., PLoS Comput Biol 17:e1008646, 2021, and the
format specification, petab.readthedocs.io): a condition column names a model parameter,
a compartment or a species (an initial value); empty (NaN) cells keep the default;
``observableParameters`` / ``noiseParameters`` cells are ``;``-separated numbers or
parameter ids, or one value for all placeholders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from physode.errors import InvalidObservations

SCALES = ("lin", "log", "log10")


@dataclass
class ParameterTable:
    """The PEtab parameter table in arrays (all parameters; ``estimated`` marks the free
    ones). Values are on the linear scale; ``scales`` says how each is fitted."""

    ids: list[str]
    scales: list[str]
    lower: np.ndarray
    upper: np.ndarray
    nominal: np.ndarray
    estimated: np.ndarray  # bool
    priors: list[tuple[str, list[float]] | None]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {pid: i for i, pid in enumerate(self.ids)}

    @property
    def free(self) -> list[int]:
        return [i for i, e in enumerate(self.estimated) if e]


def _prior(row: pd.Series) -> tuple[str, list[float]] | None:
    kind = row.get("objectivePriorType")
    if not isinstance(kind, str) or not kind:
        return None
    params = str(row.get("objectivePriorParameters", ""))
    try:
        values = [float(v) for v in params.split(";") if v.strip()]
    except ValueError:
        raise InvalidObservations(f"parameter {row.name!r}: objectivePriorParameters "
                                  f"{params!r} are not numbers") from None
    return kind, values


def parameter_table(df: pd.DataFrame, where: str) -> ParameterTable:
    """Read the PEtab parameter table ``df`` (indexed by parameterId)."""
    ids = [str(i) for i in df.index]
    scales = [str(s) if isinstance(s, str) else "lin"
              for s in df.get("parameterScale", pd.Series("lin", index=df.index))]
    for pid, s in zip(ids, scales):
        if s not in SCALES:
            raise InvalidObservations(f"{where}: parameter {pid!r} has parameterScale {s!r}; "
                                      f"use one of {', '.join(SCALES)}")
    est = df.get("estimate", pd.Series(1, index=df.index)).fillna(0).astype(int).to_numpy()
    nominal = df["nominalValue"].astype(float).to_numpy() if "nominalValue" in df else \
        np.full(len(ids), np.nan)
    lower = df.get("lowerBound", pd.Series(-np.inf, index=df.index)).astype(float).to_numpy()
    upper = df.get("upperBound", pd.Series(np.inf, index=df.index)).astype(float).to_numpy()
    priors = [_prior(row) for _, row in df.iterrows()]
    return ParameterTable(ids, scales, lower, upper, nominal, est.astype(bool), priors)


@dataclass
class Sources:
    """Values gathered from the parameter vector: ``idx`` (-1: use ``const``)."""

    idx: np.ndarray
    const: np.ndarray


def value_source(value: Any, table: ParameterTable, defaults: dict[str, float],
                 where: str) -> tuple[int, float]:
    """``(index, constant)`` of one table cell: a number, a parameter id, or a model
    parameter id whose default is used."""
    if isinstance(value, int | float | np.integer | np.floating):
        return -1, float(value)
    text = str(value).strip()
    try:
        return -1, float(text)
    except ValueError:
        pass
    if text in table.index:
        return table.index[text], math.nan
    if text in defaults:
        return -1, defaults[text]
    raise InvalidObservations(f"{where}: {text!r} is neither a number nor a parameter of the "
                              "parameter table")


def split_overrides(cell: Any, n: int, where: str) -> list[Any]:
    """The ``n`` values of an ``observableParameters``/``noiseParameters`` cell."""
    if n == 0:
        return []
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        raise InvalidObservations(f"{where}: {n} override(s) needed, the cell is empty")
    if isinstance(cell, int | float | np.integer | np.floating):
        parts: list[Any] = [float(cell)]
    else:
        parts = [p.strip() for p in str(cell).split(";")]
    if len(parts) == 1 and n > 1:
        parts = parts * n
    if len(parts) != n:
        raise InvalidObservations(f"{where}: {len(parts)} override(s) given, {n} needed")
    return parts


__all__ = ["ParameterTable", "Sources", "parameter_table", "split_overrides", "value_source"]
