"""The mmgen command line: one typer app (`app`), its command groups in the modules of this package.

Installed, `mmgen` runs `main`; in a checkout `python cli.py` does the same.
"""

from __future__ import annotations

from mmgen.cli import check, core, data, dedup, evaluation, models, records, serve, train, transfer  # noqa: F401  (they register their commands)
from mmgen.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `mmgen` console script; `MMGEN_LOG=info` shows the library's log (default: warnings)."""
    import logging
    import os

    level = os.environ.get("MMGEN_LOG", "WARNING").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    app()
