"""The subcommand registry of the command line: :func:`command`, ``COMMANDS``, exit codes.

Each module of :mod:`physode.cli.commands` decorates its handler with :func:`command`;
:mod:`physode.cli.main` builds the parser from ``COMMANDS``. Kept apart from ``main`` so
that the commands and the entry point both depend on it and not on each other.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

EXIT_USAGE = 2

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
