"""`python -m probe` is the `probe` command."""

from probe.cli.main import main

main()
