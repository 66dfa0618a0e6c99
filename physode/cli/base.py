"""The subcommand registry of the command line: :func:`command`, ``COMMANDS``, exit codes.

Each module of :mod:`physode.cli.commands` decorates its handler with :func:`command`;
:mod:`physode.cli.main` builds the parser from ``COMMANDS``. Kept apart from ``main`` so
that the commands and the entry point both depend on it and not on each other.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

# Exit statuses of every subcommand (documented in ``physode --help`` and ``physode fit --help``).
EXIT_OK = 0  # done; for ``fit``/``demo``: the fit converged
EXIT_USAGE = 2  # a user's mistake (bad argument, file, system); one line on stderr
EXIT_NOT_CONVERGED = 3  # the fit stopped without meeting a convergence criterion; saved
EXIT_FAILED = 4  # the fit failed: no finite chi-square at the estimate; what there is, saved
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT); ``fit`` saves the best result so far
EXIT_TERMINATED = 143  # SIGTERM (128 + 15); nothing half-written is left behind

EXIT_CODES_HELP = """\
exit status:
  0    success (for fit and demo: the fit converged)
  2    user error: bad argument, unreadable or invalid file, unknown system,
       unusable output path (one line on stderr, nothing written)
  3    the fit did not converge (no convergence criterion met, e.g. --max-iter
       reached); the report says why it stopped, the results are saved
  4    the fit failed (the model cannot be solved at the estimate); what there
       is, is saved
  130  interrupted (Ctrl-C); fit saves the best result so far
  143  terminated by SIGTERM (129: SIGHUP); no partial output is left behind"""

Handler = Callable[[argparse.Namespace], int | None]
Configure = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, argument setup and handler."""

    name: str
    help: str
    configure: Configure
    run: Handler


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Configure | None = None) -> Callable[[Handler],
                                                                                   Handler]:
    """Register ``run(args) -> exit status | None`` as subcommand ``name``; ``configure``
    adds its arguments to the subparser."""

    def decorate(run: Handler) -> Handler:
        COMMANDS[name] = Command(name, help, configure or (lambda p: None), run)
        return run

    return decorate


class UsageError(Exception):
    """A malformed command line (raised instead of argparse's print-usage-and-exit)."""
