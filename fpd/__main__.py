"""``python -m fpd`` = the ``fpd`` command line."""

from fpd.cli import main

if __name__ == "__main__":
    main(prog_name="fpd")
