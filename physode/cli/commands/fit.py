"""``physode fit SYSTEM DATA.h5 --out FIT.nc``: fit a system to observations.

Prints the report, writes the labelled results (netCDF, atomically) and optionally a
figure. Ctrl-C stops the fit; the best result so far is still reported and saved (exit
status 130).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from physode.cli.base import command
from physode.cli.commands.simulate import parse_overrides
from physode.errors import InvalidArgument

EXIT_INTERRUPTED = 130


def add_fit_options(p: argparse.ArgumentParser, optimizer: str = "lbfgs") -> None:
    """The optimiser and solver options shared by ``fit`` and ``demo``."""
    p.add_argument("--optimizer", choices=("lbfgs", "adam", "lm"), default=optimizer,
                   help=f"optimiser ({optimizer})")
    p.add_argument("--method", default="dopri5", help="ODE solver (dopri5)")
    p.add_argument("--gradient", choices=("aca", "direct", "adjoint"), default="aca",
                   help="gradient of L-BFGS/Adam (aca)")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance (1e-8)")
    p.add_argument("--atol", type=float, default=1e-10, help="absolute tolerance (1e-10)")
    p.add_argument("--max-iter", type=int, default=None,
                   help="iterations (default: 200 lbfgs, 500 adam, 100 lm)")
    p.add_argument("--multistart", type=int, default=0,
                   help="extra starts drawn within the bounds (0)")
    p.add_argument("--seed", type=int, default=0, help="multistart seed (0)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="compile the solver step (auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def fit_kwargs(args: argparse.Namespace) -> dict:
    return {"optimizer": args.optimizer, "method": args.method, "gradient": args.gradient,
            "rtol": args.rtol, "atol": args.atol, "max_iter": args.max_iter,
            "multistart": args.multistart, "seed": args.seed,
            "compile": {"auto": "auto", "on": True, "off": False}[args.compile],
            "progress": not args.no_progress}


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("system", help="registry name (see `physode systems`) or package.module:Class")
    p.add_argument("data", metavar="DATA.h5", help="observations file")
    p.add_argument("--out", required=True, metavar="FIT.nc", help="output netCDF file")
    p.add_argument("--plot", metavar="FIT.png", help="also draw the fit to this image")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="initial value of a parameter (VALUE: number or comma-separated)")
    p.add_argument("--unknown-initial-state", nargs="+", metavar="VAR",
                   help="fit the initial value of these state variables")
    add_fit_options(p)


def save_outputs(res, out: str | Path, plot: str | Path | None) -> None:
    """Write the netCDF results (and the figure), creating parent directories."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res.save(out)
    print(f"wrote {out}")
    if plot:
        plot = Path(plot)
        plot.parent.mkdir(parents=True, exist_ok=True)
        res.plot(plot)
        print(f"wrote {plot}")


@command("fit", "fit a system's parameters to observations (HDF5) and save the results",
         _configure)
def run(args: argparse.Namespace) -> int:
    from physode.data.observations import load_observations
    from physode.estimate.fit import fit
    from physode.model import registry

    data = Path(args.data)
    if not data.exists():
        raise FileNotFoundError(2, "no such file", str(data))
    if args.max_iter is not None and args.max_iter < 1:
        raise InvalidArgument(f"--max-iter must be >= 1, got {args.max_iter}")
    system = registry.get(args.system, **parse_overrides(args.set))
    if args.unknown_initial_state:
        system.set_initial_state(unknown=args.unknown_initial_state)
    obs = load_observations(data, system=system)
    res = fit(system, obs, **fit_kwargs(args))
    print(res.report())
    save_outputs(res, args.out, args.plot)
    if res.interrupted:
        print("interrupted: saved the best result so far")
        return EXIT_INTERRUPTED
    return 0
