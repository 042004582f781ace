"""`python -m spinegrade ...`: the command line without the console script (DDP re-runs it per process)."""

from spinegrade.cli import main

main()
