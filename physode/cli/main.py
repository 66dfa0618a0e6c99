"""The ``physode`` command line's entry point: :func:`main` builds the parser and runs a
subcommand (``physode systems | simulate | inspect | fit | demo``).

Subcommands are registered, not hard-wired: each module of :mod:`physode.cli.commands`
decorates a function with :func:`~physode.cli.base.command`, and :func:`main` imports them
all, so a new subcommand is a new file in that package and nothing else.

Exit statuses (``physode --help`` and ``physode fit --help`` list them too):

- 0: success (for ``fit`` and ``demo``: the fit converged);
- 2: a user's mistake (a :class:`~physode.errors.PhysodeError`, a missing or unreadable
  file, an unusable output path, a bad argument): one line ``physode: error: ...`` on
  stderr, no traceback, nothing written;
- 3: the fit stopped without meeting a convergence criterion (results saved, the report
  says why it stopped); 4: the fit failed (no finite chi-square; what there is, saved);
- 130: interrupted by Ctrl-C (``fit`` saves the best result so far);
- 143: terminated by SIGTERM (129: SIGHUP); like Ctrl-C, no half-written output or temporary
  file stays.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import NoReturn

import physode.cli.commands as commands
from physode.cli.base import (
    COMMANDS,
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    UsageError,
)
from physode.errors import PhysodeError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class Terminated(SystemExit):
    """SIGTERM, raised in the main thread so that every ``with`` block (atomic writes
    included) unwinds; a SystemExit, so ``except Exception`` does not swallow it."""


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    from physode._version import __version__

    _discover()
    parser = _Parser(prog="physode", description="Fit parameters of physical ODE systems "
                     "with exact ACA gradients.", epilog=EXIT_CODES_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"physode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in sorted(COMMANDS):
        cmd = COMMANDS[name]
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename or repr(exc.filename)}: {exc.strerror}"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Terminated(128 + signum)


def _signals() -> list[signal.Signals]:
    return [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])


@contextlib.contextmanager
def _termination_unwinds() -> Iterator[None]:
    """While the command runs, SIGTERM (and SIGHUP) raise :class:`Terminated` in the main
    thread, for the signals nobody else handles; the previous handlers come back after."""
    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in _signals():
            if signal.getsignal(sig) is signal.SIG_DFL:
                signal.signal(sig, _on_signal)
                installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            signal.signal(sig, signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    try:
        with _termination_unwinds():
            parser = build_parser()
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help(sys.stderr)
                return EXIT_USAGE
            status = COMMANDS[args.command].run(args)
            return 0 if status is None else int(status)
    except (PhysodeError, UsageError, OSError) as exc:
        print(f"physode: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("physode: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_TERMINATED
        name = signal.Signals(code - 128).name if code > 128 else "signal"
        print(f"physode: terminated ({name})", file=sys.stderr)
        return code


__all__ = ["Terminated", "build_parser", "main"]
