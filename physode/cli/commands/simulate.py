"""``physode simulate SYSTEM ... --out FILE.h5``: synthetic observations of a system.

Also holds the parsers of ``--set NAME=VALUE`` and ``--observe VAR=A,B`` that ``fit`` shares.
The output path is checked before the simulation (status 2 if it cannot be written).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from physode.cli.base import command
from physode.cli.checks import check_input, check_outputs, integer, make_parents, real
from physode.errors import InvalidArgument

MAX_TIMES = 10_000_000  # --n above this is a typo, not an experiment (and a MemoryError)


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("system", help="registry name (see `physode systems`) or package.module:Class")
    p.add_argument("--t0", type=real(), help="first observation time (default: system's t_span)")
    p.add_argument("--t1", type=real(), help="last observation time (default: system's t_span)")
    p.add_argument("--n", type=integer(1, MAX_TIMES), default=101,
                   help=f"number of observation times, 1 to {MAX_TIMES:,} (101)")
    p.add_argument("--log-time", action="store_true",
                   help="log-spaced times from t0 > 0 to t1; the initial state stays at the "
                        "system's t_span start")
    p.add_argument("--noise", type=real(0.0), default=0.0,
                   help="standard deviation of the Gaussian noise (default 0: exact data)")
    p.add_argument("--relative-noise", action="store_true",
                   help="noise is relative: sigma = noise * |value| point by point")
    p.add_argument("--seed", type=integer(0), nargs="+", default=[0], metavar="SEED",
                   help="noise seed(s), >= 0 (0); several seeds give one experiment per seed "
                        "and initial state")
    p.add_argument("--y0", action="append", default=[], metavar="V1,V2,...",
                   help="an initial state (the whole flat state, comma-separated); repeat for "
                        "several experiments (default: the system's y0)")
    p.add_argument("--y0-file", metavar="FILE",
                   help="initial states, one per row: a text file (numbers separated by "
                        "commas or blanks, '#' comments) or a .npy array")
    p.add_argument("--observe", action="extend", nargs="+", metavar="VAR",
                   help="observe only these variables; VAR=A,B keeps components A, B (labels "
                        "or positions) of the first dimension, VAR:DIM=A,B of dimension DIM")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter (--set beta=0.3) or an initial-state value of a "
                        "state variable or species (--set I=0.05); VALUE: number or "
                        "comma-separated numbers")
    p.add_argument("--method", help="solver (default: dopri5, rodas4 if the problem is stiff)")
    p.add_argument("--rtol", type=real(0.0, strict=True), default=1e-10,
                   help="relative tolerance, > 0 (1e-10)")
    p.add_argument("--atol", type=real(0.0), default=1e-12,
                   help="absolute tolerance, >= 0 (1e-12)")
    p.add_argument("--out", required=True, metavar="FILE.h5",
                   help="output HDF5 file (parent directories are created)")


def _item(text: str) -> Any:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return text


def parse_observe(specs: list[str] | None) -> dict[str, Any] | None:
    """``["theta", "concentration=S,P", "position:body=0,1"]`` -> observe mapping."""
    if not specs:
        return None
    out: dict[str, Any] = {}
    for spec in specs:
        head, sep, items = spec.partition("=")
        name, _, dim = head.partition(":")
        if not name.isidentifier() or (sep and not items) or (dim and not sep):
            raise InvalidArgument(f"--observe {spec!r}: expected VAR, VAR=A,B or VAR:DIM=A,B")
        if not sep:
            out[name] = None
            continue
        chosen = [_item(x) for x in items.split(",")]
        if dim:
            current = out.get(name)
            out[name] = {**(current if isinstance(current, dict) else {}), dim: chosen}
        else:
            out[name] = chosen
    return out


def parse_overrides(specs: list[str]) -> dict[str, Any]:
    """``["length=1.5", "masses=1,1,0.9"]`` -> ``{"length": 1.5, "masses": [1, 1, 0.9]}``;
    VALUE must be finite numbers."""
    out: dict[str, Any] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip():
            raise InvalidArgument(f"--set {spec!r}: expected NAME=VALUE")
        try:
            numbers = [float(x) for x in value.split(",")]
        except ValueError:
            raise InvalidArgument(f"--set {spec!r}: VALUE must be numbers") from None
        if not all(math.isfinite(x) for x in numbers):
            raise InvalidArgument(f"--set {spec!r}: VALUE must be finite numbers")
        out[name.strip()] = numbers[0] if len(numbers) == 1 else numbers
    return out


def initial_states(rows: list[str], path: str | None, size: int) -> np.ndarray | None:
    """``(n_experiments, size)`` from ``--y0`` rows and/or a ``--y0-file``; None when neither
    is given (the system's reference y0 is used)."""
    states: list[np.ndarray] = []
    for text in rows:
        try:
            states.append(np.array([float(x) for x in text.split(",")], dtype=np.float64))
        except ValueError:
            raise InvalidArgument(f"--y0 {text!r}: expected comma-separated numbers") from None
    if path is not None:
        check_input("--y0-file", path)
        try:
            table = np.load(path, allow_pickle=False) if path.endswith(".npy") else \
                np.loadtxt(path, delimiter="," if _has_commas(path) else None, ndmin=2)
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"--y0-file {path}: cannot read a table of numbers "
                                  f"({exc})") from None
        table = np.asarray(table, dtype=np.float64)
        states += list(table.reshape(-1, table.shape[-1]) if table.ndim else table.reshape(1, 1))
    if not states:
        return None
    for i, row in enumerate(states):
        if row.shape != (size,) or not np.all(np.isfinite(row)):
            where = (f"--y0 {rows[i]!r}" if i < len(rows)
                     else f"--y0-file {path} row {i - len(rows)}")
            raise InvalidArgument(f"{where}: expected {size} finite numbers (the flat state), "
                                  f"got {row.size}")
    return np.stack(states)


def _has_commas(path: str) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return any("," in line for line in fh if not line.lstrip().startswith("#"))


@command("simulate", "simulate a system and write synthetic observations (HDF5)", _configure)
def run(args: argparse.Namespace) -> int:
    from physode.cli.build import build_system
    from physode.data.hdf5 import save_observations
    from physode.data.observations import Observations
    from physode.data.simulate import simulate

    check_outputs([("--out", args.out)])
    system = build_system(args.system, parse_overrides(args.set))
    span = system.t_span
    t0 = args.t0 if args.t0 is not None else (span[0] if span else None)
    t1 = args.t1 if args.t1 is not None else (span[1] if span else None)
    if t0 is None or t1 is None:
        raise InvalidArgument(f"system {args.system!r} has no t_span: give --t0 and --t1")
    if args.n < 1 or (args.n > 1 and not t1 > t0):
        raise InvalidArgument(f"need --n >= 1 and t1 > t0, got n={args.n}, t0={t0}, t1={t1}")
    if args.log_time:
        if not t0 > 0:
            raise InvalidArgument(f"--log-time needs t0 > 0, got {t0}")
        times = np.logspace(np.log10(t0), np.log10(t1), args.n)
    else:
        times = np.linspace(t0, t1, args.n)
    start = span[0] if span and span[0] < times[0] else None
    y0 = initial_states(args.y0, args.y0_file, system.state_size)
    seeds = list(dict.fromkeys(args.seed))
    n_y0 = 1 if y0 is None else len(y0)
    parts: list[Observations] = []
    for seed in seeds:
        names = [f"exp{len(parts) * n_y0 + i}" for i in range(n_y0)]
        part = simulate(system, times, y0=y0, noise=args.noise, seed=seed,
                        observe=parse_observe(args.observe), relative_noise=args.relative_noise,
                        t0=start, method=args.method, rtol=args.rtol, atol=args.atol,
                        experiment_names=names)
        for i, exp in enumerate(part.experiments):
            exp.metadata.update(seed=int(seed), initial_state=i)
        parts.append(part)
    first = parts[0]
    meta = dict(first.metadata, seed=seeds[0] if len(seeds) == 1 else tuple(seeds))
    obs = Observations(system=first.system, experiments=[e for p in parts for e in p.experiments],
                       units=first.units, time_units=first.time_units,
                       parameters=first.parameters, parameter_units=first.parameter_units,
                       metadata=meta)
    save_observations(obs, make_parents(args.out), system=system)
    variables = ", ".join(obs.variables)
    print(f"wrote {args.out}: system {obs.system!r}, {len(obs)} experiment(s), {times.size} "
          f"times in [{times[0]:g}, {times[-1]:g}], observed {variables}, "
          f"method {obs.metadata['method']}")
    return 0
