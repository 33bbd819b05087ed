"""`python -m probe` is the `probe` command."""

from probe.cli.main import main

if __name__ == "__main__":  # a worker process started by spawn never runs the command again
    main()
