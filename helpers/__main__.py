"""``python -m helpers``: the command line (see :mod:`helpers.cli`)."""

from helpers.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
