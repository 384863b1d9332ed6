"""`python cli.py ...` from a checkout: the mmgen command line (installed, the `mmgen` command).

The commands live in `mmgen/cli/`; this file only runs them.
"""

from mmgen.cli import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
