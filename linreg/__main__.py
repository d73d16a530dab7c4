"""``python -m linreg``: the command-line interface."""

from linreg.cli import main

if __name__ == "__main__":
    main()
