"""Store fixtures: `db_url` runs a test on SQLite and on PostgreSQL (see `tests/pgserver.py`)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from mmgen.store import Store, open_store


def _load_pgserver() -> ModuleType:
    # Loaded by path under one module name, so every conftest that does this shares one server.
    name = "mmgen_tests_pgserver"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "pgserver.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


pgserver = _load_pgserver()
pg_server_url = pgserver.pg_server_url
db_url = pgserver.db_url


@pytest.fixture(scope="module", params=pgserver.BACKENDS)
def module_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One migrated store per backend shared by a module's tests (each must leave it as it found it)."""
    with pgserver.database_url(request, request.param, tmp_path_factory.mktemp("store")) as url:
        opened = open_store(url)
        try:
            yield opened
        finally:
            opened.close()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """An open store, migrated to head, on each backend."""
    opened = open_store(db_url)
    try:
        yield opened
    finally:
        opened.close()
