"""The ``physode`` command line: :mod:`~physode.cli.main` (entry point, exit statuses),
:mod:`~physode.cli.base` (subcommand registry), :mod:`~physode.cli.checks` (argument and
output-path checks) and one module per subcommand in :mod:`physode.cli.commands`."""
