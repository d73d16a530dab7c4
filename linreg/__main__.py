"""``python -m linreg``: the command-line interface, started once the process environment is checked."""

import sys

from linreg.environment import check_process_environment


def main() -> None:
    """Checks the process environment, then runs the command line (Lightning reads the environment on import)."""
    check_process_environment()
    try:
        from linreg.cli import main as cli_main  # after the check: the import reads it
    except KeyboardInterrupt:  # Ctrl-C while torch and Lightning are imported (seconds): before any handler of ours
        sys.stderr.write("linreg: error: stopped by Ctrl-C (SIGINT) while starting; nothing was read or written\n")
        raise SystemExit(130) from None
    cli_main()


if __name__ == "__main__":
    main()
