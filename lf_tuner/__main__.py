"""`python -m lf_tuner ...` runs the CLI (used to start child lf-tuner processes)."""

from lf_tuner.cli import main

if __name__ == "__main__":
    main()
