"""``python -m helpers ...`` runs the command line (see :mod:`helpers.cli`)."""

from helpers.cli import main

raise SystemExit(main())
