"""Workspace layout: where the SQL store, indexes, models and outputs live.

A workspace folder that does not exist yet is created private (mode 0o700) by the first command
that writes to it (`make_private_root`, called where the SQLite store or an index folder is made): the
SQLite file (and its -wal and -shm files), index vectors, models, caches and generated outputs all
lie below it, so other users of the machine cannot reach them whatever mode the umask gives each
file. An existing folder keeps the mode it has (sharing one is then a deliberate choice).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKSPACE = Path("indexes")
DB_FILENAME = "mmgen.db"
ROOT_MODE = 0o700  # a new workspace folder: only its owner may list or enter it


@dataclass(frozen=True)
class Workspace:
    """A folder holding `mmgen.db`, one folder per index, `models/` and `outputs/`."""

    root: Path
    db_url: str

    @classmethod
    def resolve(cls, root: str | os.PathLike[str] | None = None, db_url: str | None = None) -> Workspace:
        """Pick the workspace from the argument, `MMGEN_WORKSPACE`, or `./indexes`; the DB from `MMGEN_DB` or SQLite."""
        path = Path(root or os.environ.get("MMGEN_WORKSPACE") or DEFAULT_WORKSPACE).expanduser().resolve()
        url = db_url or os.environ.get("MMGEN_DB") or f"sqlite:///{path / DB_FILENAME}"
        return cls(root=path, db_url=url)

    def index_dir(self, name: str) -> Path:
        """Folder of one named index."""
        return self.root / name

    @property
    def models_dir(self) -> Path:
        """Trained checkpoints."""
        return self.root / "models"

    @property
    def outputs_dir(self) -> Path:
        """Generated files."""
        return self.root / "outputs"


def make_private_root(path: Path) -> None:
    """Create a missing workspace folder with mode 0o700 (its parents, when missing too, get the default mode)."""
    if path.is_dir():
        return
    path.mkdir(mode=ROOT_MODE, parents=True, exist_ok=True)  # OSError: the caller says what it was making
