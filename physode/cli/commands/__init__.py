"""Subcommands of the ``physode`` command line, one module each.

A module here registers its subcommand with :func:`physode.cli.command`; the command line
imports every module of this package, so adding a subcommand is adding a file.
"""
