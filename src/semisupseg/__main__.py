"""``python -m semisupseg ...`` runs the command line (same as the ``semisupseg`` console script)."""
import sys

from semisupseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
