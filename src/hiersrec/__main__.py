"""``python -m hiersrec``: the same command line as the ``hiersrec`` console script."""

from hiersrec.cli import main

if __name__ == "__main__":
    main()
