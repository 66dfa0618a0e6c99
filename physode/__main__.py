"""``python -m physode``: the command line (as the ``physode`` script)."""

from physode.cli.main import main

raise SystemExit(main())
