"""``python -m linreg``: the command-line interface, started once the process environment is checked."""

from linreg.environment import check_process_environment


def main() -> None:
    """Checks the process environment, then runs the command line (Lightning reads the environment on import)."""
    check_process_environment()
    from linreg.cli import main as cli_main  # after the check: the import reads it

    cli_main()


if __name__ == "__main__":
    main()
