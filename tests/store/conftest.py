"""Store fixtures: `db_url` runs a test on SQLite and on PostgreSQL (see `tests/pgserver.py`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from mmgen.store import Store, open_store


# Loaded once by tests/conftest.py, which also provides `pg_server_url` and `db_url`.
pgserver = sys.modules["mmgen_tests_pgserver"]


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
