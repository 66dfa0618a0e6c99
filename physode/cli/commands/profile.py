"""``physode profile SYSTEM DATA.h5 --out FIT.nc``: fit, then profile likelihoods (and
optionally posterior samples) of the fitted parameters.

A saved fit (netCDF) holds the numbers, not the model, so the command fits first (the same
options as ``physode fit``), then runs :func:`physode.profile` on the result (every free
physical parameter, or ``--names``), optionally :func:`physode.sample`, prints the report
with the profile intervals next to the Gauss-Newton ones, and writes one netCDF file with
the fit, the profiles and the draws (atomically). Exit status as ``physode fit``.
"""

from __future__ import annotations

import argparse

from physode.cli.base import command
from physode.cli.checks import check_input, check_outputs, integer, make_parents, real
from physode.cli.commands.fit import add_fit_options, check_plot_format, exit_status, fit_kwargs
from physode.cli.commands.simulate import parse_overrides

__all__ = ["run"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("system", help="registry name (see `physode systems`) or package.module:Class")
    p.add_argument("data", metavar="DATA.h5", help="observations file")
    p.add_argument("--out", required=True, metavar="FIT.nc",
                   help="output netCDF file: fit, profiles (and draws)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="starting value of a parameter (as in `physode fit`)")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="parameters (or labels such as masses[1]) to profile; default all")
    p.add_argument("--confidence", type=real(0.0, strict=True), default=0.95,
                   help="confidence of the profile intervals, in (0, 1) (0.95)")
    p.add_argument("--max-profile-steps", type=integer(1), default=40,
                   help="continuation steps per side before a side is called open (40)")
    p.add_argument("--plot-profiles", metavar="PROFILES.png",
                   help="draw the profiles with the threshold line to this image")
    p.add_argument("--sample", choices=("nuts", "emcee"),
                   help="also draw posterior samples with this sampler")
    p.add_argument("--draws", type=integer(1), default=1000, help="draws per chain (1000)")
    p.add_argument("--chains", type=integer(1), default=4, help="chains (4)")
    add_fit_options(p)


@command("profile", "fit, then profile likelihoods (and posterior samples) of the parameters",
         _configure)
def run(args: argparse.Namespace) -> int:
    from physode.cli.build import build_system
    from physode.data.hdf5 import load_observations, read_observations
    from physode.errors import InvalidArgument
    from physode.estimate.fit import fit
    from physode.estimate.profiles import profile
    from physode.estimate.sampling import sample

    if not args.confidence < 1.0:
        raise InvalidArgument(f"--confidence must be in (0, 1), got {args.confidence}")
    data = check_input("DATA.h5", args.data)
    check_outputs([("--out", args.out), ("--plot-profiles", args.plot_profiles)],
                  [("DATA.h5", args.data)])
    check_plot_format("--plot-profiles", args.plot_profiles)
    system = build_system(args.system, parse_overrides(args.set),
                          data=read_observations(data))
    obs = load_observations(data, system=system)
    res = fit(system, obs, **fit_kwargs(args))
    if res.success:
        prof = profile(res, args.names, confidence=args.confidence,
                       max_steps=args.max_profile_steps)
        if args.plot_profiles:
            prof.plot(make_parents(args.plot_profiles))
            print(f"wrote {args.plot_profiles}")
        if args.sample:
            sample(res, method=args.sample, draws=args.draws, chains=args.chains,
                   seed=args.seed)
    print(res.report())
    out = make_parents(args.out)
    res.save(out)
    print(f"wrote {out}")
    return exit_status(res)
