"""Workspace layout: where the SQL store, indexes, models and outputs live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKSPACE = Path("indexes")
DB_FILENAME = "mmgen.db"


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
