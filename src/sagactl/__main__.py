"""`python -m sagactl` runs the command line."""

from sagactl.cli import main

main()
