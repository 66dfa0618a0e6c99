"""``physode demo``: the seed paper's three-body mass fit, end to end.

Zhuang et al. (ICML 2020) fit the three masses of a nondimensionalised three-body system
from its trajectory. Here: positions at 1000 times (datasets/three_body_paper.h5, made
with masses 1.1, 1.1, 0.9), masses started at (1.0, 1.05, 0.95), Levenberg-Marquardt on
the exact sensitivity Jacobian with a compiled solver step. Prints the report and the
error against the truth, writes results/three_body_fit.nc and results/three_body_fit.png
(both checked before the fit; an output that is the --data file is refused). Exit statuses
as ``physode fit``'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from physode.cli.base import command
from physode.cli.checks import check_input, check_outputs
from physode.cli.commands.fit import add_fit_options, exit_status, fit_kwargs, save_outputs

START = (1.0, 1.05, 0.95)
DATA = "three_body_paper.h5"


def default_data() -> Path:
    """The shipped dataset: datasets/ next to the package (a source checkout), else cwd."""
    here = Path(__file__).resolve().parents[3] / "datasets" / DATA
    return here if here.exists() else Path("datasets") / DATA


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help=f"observations (default datasets/{DATA})")
    p.add_argument("--out-dir", default="results", help="output directory (results)")
    add_fit_options(p, optimizer="lm")


@command("demo", "fit the three masses of the seed paper's three-body problem", _configure)
def run(args: argparse.Namespace) -> int:
    from physode.data.hdf5 import load_observations
    from physode.estimate.fit import fit
    from physode.model import registry

    data = check_input("--data", args.data if args.data is not None else default_data())
    out = Path(args.out_dir)
    nc, png = out / "three_body_fit.nc", out / "three_body_fit.png"
    check_outputs([("--out-dir", nc), ("--out-dir", png)], [("--data", data)])
    system = registry.get("three-body-paper", masses=list(START))
    obs = load_observations(data, system=system)
    print(f"physode demo: fitting the masses of the seed paper's three-body problem to "
          f"{data} from {START}")
    res = fit(system, obs, **fit_kwargs(args))
    print(res.report())
    truth = np.asarray(obs.parameters.get("masses", [1.1, 1.1, 0.9]), dtype=np.float64)
    rel = np.abs(res.params["masses"] / truth - 1.0)
    print("relative error of the masses: " + ", ".join(f"{x:.1e}" for x in rel)
          + f" (max {rel.max():.1e}) in {res.wall_time:.1f} s")
    save_outputs(res, nc, png)
    return exit_status(res)
