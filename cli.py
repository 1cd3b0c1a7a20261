"""Run the automoe CLI from a source checkout: ``python cli.py search``."""

import sys

from automoe.cli import main

if __name__ == "__main__":
    sys.exit(main())
