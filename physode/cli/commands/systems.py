"""``physode systems``: list the registered systems (``-v``: their variables, parameters)."""

from __future__ import annotations

import argparse

from physode.cli.base import command
from physode.errors import PhysodeError


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show each system's state variables and parameters")


@command("systems", "list the registered systems", _configure)
def run(args: argparse.Namespace) -> int:
    from physode.model import registry

    entries = registry.available()
    width = max((len(n) for n in entries), default=0)
    for name, desc in entries.items():
        print(f"{name:<{width}}  {desc}")
        if args.verbose:
            try:
                system = registry.get(name)
            except (PhysodeError, TypeError):  # built from arguments (reaction-network)
                print(f"{'':<{width}}    (built from arguments; see its documentation)")
                continue
            for var in system.layout.variables:
                dims = ", ".join(f"{d}={s}" for d, s in zip(var.dims, var.shape)) or "scalar"
                units = f" [{var.units}]" if var.units else ""
                print(f"{'':<{width}}    state {var.name} ({dims}){units}")
            for pname, spec in system.parameter_specs().items():
                value = spec.value.tolist()
                tag = " fixed" if spec.fixed else ""
                units = f" [{spec.units}]" if spec.units else ""
                print(f"{'':<{width}}    param {pname} = {value}{units}{tag}")
    return 0
