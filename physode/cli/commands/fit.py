"""``physode fit SYSTEM DATA.h5 --out FIT.nc``: fit a system to observations.

Prints the report, writes the labelled results (netCDF, atomically) and optionally a
figure. Every output path is checked before the fit starts: one that is the input file
(same path, same inode or a link to it) or cannot be written is refused (status 2).

Exit status (also in ``physode fit --help``): 0 the fit converged; 2 a user error (one line
on stderr, nothing written); 3 the fit stopped without meeting a convergence criterion
(``res.success`` is false; the report's stop reason says why; results saved); 4 the fit
failed (no finite chi-square; what there is, saved); 130 Ctrl-C stopped the fit (the best
result so far is reported and saved); 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
from pathlib import Path
from typing import Any

from physode.cli.base import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_CONVERGED,
    EXIT_OK,
    command,
)
from physode.cli.checks import check_input, check_outputs, integer, make_parents, real
from physode.cli.commands.simulate import parse_overrides
from physode.errors import InvalidArgument
from physode.estimate.distributed import init_from_env, is_main_rank

__all__ = ["EXIT_INTERRUPTED", "add_fit_options", "exit_status", "fit_kwargs", "run",
           "save_outputs"]


def add_fit_options(p: argparse.ArgumentParser, optimizer: str = "auto") -> None:
    """The optimiser and solver options shared by ``fit`` and ``demo``."""
    p.add_argument("--optimizer", choices=("auto", "lbfgs", "adam", "lm"), default=optimizer,
                   help=f"optimiser ({optimizer}; auto: lm for least squares with up to a few "
                        "hundred unknowns, lbfgs for neural terms; the report says which)")
    p.add_argument("--method", default="dopri5", help="ODE solver (dopri5)")
    p.add_argument("--gradient", choices=("aca", "direct", "adjoint"), default="aca",
                   help="gradient of L-BFGS/Adam (aca)")
    p.add_argument("--rtol", type=real(0.0, strict=True), default=1e-8,
                   help="relative tolerance, > 0 (1e-8)")
    p.add_argument("--atol", type=real(0.0), default=1e-10,
                   help="absolute tolerance, >= 0 (1e-10)")
    p.add_argument("--max-iter", type=integer(1), default=None,
                   help="iterations, >= 1 (default: 200 lbfgs, 500 adam, 100 lm)")
    p.add_argument("--max-steps", type=integer(1), default=None,
                   help="solver steps per solve before it gives up, >= 1 (100000)")
    p.add_argument("--multistart", type=integer(0), default=0,
                   help="extra starts drawn within the bounds (0)")
    p.add_argument("--seed", type=integer(0), default=0, help="multistart seed, >= 0 (0)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="compile the solver step (auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.epilog = EXIT_CODES_HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def fit_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"optimizer": args.optimizer, "method": args.method, "gradient": args.gradient,
            "rtol": args.rtol, "atol": args.atol, "max_iter": args.max_iter,
            "multistart": args.multistart, "seed": args.seed,
            "compile": {"auto": "auto", "on": True, "off": False}[args.compile],
            "progress": not args.no_progress,
            "options": None if args.max_steps is None else {"max_steps": args.max_steps}}


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("system", help="registry name (see `physode systems`) or package.module:Class")
    p.add_argument("data", metavar="DATA.h5", help="observations file")
    p.add_argument("--out", required=True, metavar="FIT.nc",
                   help="output netCDF file (parent directories are created)")
    p.add_argument("--plot", metavar="FIT.png",
                   help="also draw the fit to this image (format from the suffix: png, pdf, "
                        "svg, ...)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="starting value of a parameter (--set beta=0.3), or initial-state "
                        "value of a state variable or species (--set I=0.05), or the whole "
                        "initial state (--set y0=0.95,0.05,0); VALUE: number or "
                        "comma-separated numbers")
    p.add_argument("--fix", action="extend", nargs="+", default=[], metavar="NAME",
                   help="keep these parameters fixed at their (--set) value")
    p.add_argument("--free", action="extend", nargs="+", default=[], metavar="NAME",
                   help="fit these parameters although the system fixes them by default")
    p.add_argument("--unknown-initial-state", nargs="+", metavar="VAR",
                   help="fit the initial value of these state variables")
    add_fit_options(p)
    p.add_argument("--executor", metavar="WHERE",
                   help="run the starts on 'processes' (a local pool, one per core) or a Dask "
                        "scheduler (tcp://host:8786); default: one after another here")
    p.add_argument("--store", metavar="RUNS.h5",
                   help="write each finished start to this HDF5 results store as it completes")
    p.add_argument("--resume", action="store_true",
                   help="with --store: run only the starts the store does not hold yet")


def _executor(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(executor, client)`` for ``--executor``: None, 'processes', or a Dask client's
    executor (the client is closed by the caller)."""
    where = getattr(args, "executor", None)
    if where is None or where == "processes":
        return where, None
    if "://" not in where:
        raise InvalidArgument(f"--executor {where}: give 'processes' or a Dask scheduler "
                              "address such as tcp://host:8786")
    from distributed import Client

    try:
        client = Client(where, timeout=30)
    except OSError as exc:
        raise InvalidArgument(f"--executor {where}: cannot reach the Dask scheduler "
                              f"({exc})") from None
    return client.get_executor(), client


def check_plot_format(flag: str, path: str | Path | None) -> None:
    """Refuse an image path whose suffix matplotlib cannot write, before the fit."""
    if not path:
        return
    suffix = Path(path).suffix.lstrip(".").lower() or "png"
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix not in formats:
        raise InvalidArgument(f"{flag} {path}: unknown image format {suffix!r} (known: "
                              f"{', '.join(sorted(formats))})")


def save_outputs(res: Any, out: str | Path, plot: str | Path | None) -> None:
    """Write the netCDF results (and the figure), creating parent directories."""
    out = make_parents(out)
    res.save(out)
    print(f"wrote {out}")
    if plot:
        plot = make_parents(plot)
        res.plot(plot)
        print(f"wrote {plot}")


def exit_status(res: Any) -> int:
    """The documented exit status of a finished fit (see the module docstring); says on
    stderr, in one line, why it is not 0.

    Reads ``res.interrupted``, ``res.success`` (a convergence criterion was met),
    ``res.status`` (``"failed"`` when the model could not be solved), ``res.failure`` and
    ``res.stop_reason``."""
    if res.interrupted:
        print("interrupted: saved the best result so far")
        return EXIT_INTERRUPTED
    if res.success:
        return EXIT_OK
    if res.status == "failed" or not math.isfinite(float(res.chi2)):
        why = _first_line(res.failure or res.stop_reason or "the model cannot be solved")
        print(f"physode: fit failed ({why}); saved what there is", file=sys.stderr)
        return EXIT_FAILED
    why = _first_line(res.stop_reason or "no convergence criterion met")
    print(f"physode: fit did not converge ({why}); results saved", file=sys.stderr)
    return EXIT_NOT_CONVERGED


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0] if str(text).strip() else str(text)


@command("fit", "fit a system's parameters to observations (HDF5) and save the results",
         _configure)
def run(args: argparse.Namespace) -> int:
    from physode.cli.build import build_system
    from physode.data.hdf5 import load_observations, read_observations
    from physode.estimate.fit import fit

    init_from_env()  # under torchrun: join the process group (data-parallel fit)
    data = check_input("DATA.h5", args.data)
    check_outputs([("--out", args.out), ("--plot", args.plot)], [("DATA.h5", args.data)])
    check_plot_format("--plot", args.plot)
    system = build_system(args.system, parse_overrides(args.set), fix=args.fix,
                          free=args.free, data=read_observations(data))
    if args.unknown_initial_state:
        system.set_initial_state(unknown=args.unknown_initial_state)
    obs = load_observations(data, system=system)
    if args.resume and not args.store:
        raise InvalidArgument("--resume needs --store RUNS.h5 (the store to resume)")
    if args.store:
        check_outputs([("--store", args.store), ("--out", args.out)], [("DATA.h5", args.data)])
        make_parents(args.store)
    executor, client = _executor(args)
    try:
        res = fit(system, obs, **fit_kwargs(args), executor=executor, store=args.store,
                  resume=args.resume)
    finally:
        if client is not None:
            client.close()
    if not is_main_rank():  # data-parallel (torchrun): rank 0 reports and writes
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            return exit_status(res)
    print(res.report())
    save_outputs(res, args.out, args.plot)
    return exit_status(res)
