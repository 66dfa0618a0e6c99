"""The ``physode`` command line: ``physode systems | simulate | inspect | ...``.

Subcommands are registered, not hard-wired: each module of :mod:`physode.cli.commands`
decorates a function with :func:`command`, and :func:`main` imports them all, so a new
subcommand (``fit``, ``demo``) is a new file in that package and nothing else.

A user's mistake (a :class:`~physode.errors.PhysodeError`, a missing or unreadable file, a
bad argument) prints one line ``physode: error: ...`` on stderr and exits with status 2,
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from physode.cli import commands
from physode.cli.base import COMMANDS, EXIT_USAGE, UsageError
from physode.errors import PhysodeError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    from physode._version import __version__

    _discover()
    parser = _Parser(prog="physode", description="Fit parameters of physical ODE systems "
                     "with exact ACA gradients.")
    parser.add_argument("--version", action="version", version=f"physode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in sorted(COMMANDS):
        cmd = COMMANDS[name]
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 user error)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        status = COMMANDS[args.command].run(args)
        return 0 if status is None else int(status)
    except (PhysodeError, UsageError, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
            msg = f"{exc.filename}: {exc.strerror}"
        else:
            msg = _one_line(exc)
        print(f"physode: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("physode: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
