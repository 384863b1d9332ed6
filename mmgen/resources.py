"""Files that ship with mmgen: the Alembic migrations and the FAISS index presets.

In a checkout they are the top-level `migrations/` and `indexes/presets/` folders; an installed
wheel carries the same folders as the packages `mmgen._migrations` and `mmgen._presets`
(pyproject.toml maps them). Both layouts are found the same way: through the import system,
then, for a checkout that was never installed, beside the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[1]


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def migrations_path() -> Path:
    """The Alembic script folder (holding env.py) that ships with this mmgen."""
    found = _package_dir("mmgen._migrations")
    if found is not None and (found / "env.py").is_file():
        return found
    return _CHECKOUT / "migrations"


def presets_path() -> Path:
    """The folder of the built-in FAISS presets (*.json)."""
    found = _package_dir("mmgen._presets")
    if found is not None and any(found.glob("*.json")):
        return found
    return _CHECKOUT / "indexes" / "presets"
