"""Opening, migrating and failing to open the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from mmgen.errors import StoreError
from mmgen.store import Store, current_revision, downgrade, head_revision, open_store, upgrade
from mmgen.store.db import MIGRATIONS_ENV, _alembic_config, mask_url, normalize_url
from mmgen.store.models import Base, Corpus

REPO = Path(__file__).resolve().parents[2]
TABLES = {"corpora", "items", "models", "indexes", "index_rows", "prompts", "outputs", "retrievals", "feedback"}


def _tables(store: Store) -> set[str]:
    from mmgen.store.keywords import KEYWORD_TABLES

    return set(inspect(store.engine).get_table_names()) - set(KEYWORD_TABLES)


def test_open_store_creates_every_table_at_head(store: Store) -> None:
    assert _tables(store) == TABLES | {"alembic_version"}
    assert current_revision(store.url) == head_revision() == "0004"


def test_a_0001_store_upgrades_in_place_and_keeps_its_corpora(db_url: str) -> None:
    upgrade(db_url, "0001")
    with open_store(db_url, upgrade=False) as old:
        with old.engine.begin() as conn:
            conn.execute(text("INSERT INTO corpora (name, source) VALUES ('kept', 'spec')"))
    with open_store(db_url) as new, new.session() as s:  # opening migrates to head
        assert current_revision(db_url) == "0004"
        assert s.query(Corpus.name, Corpus.licence).all() == [("kept", None)]
    downgrade(db_url, "0001")
    with open_store(db_url, upgrade=False) as back:
        assert "licence" not in {c["name"] for c in inspect(back.engine).get_columns("corpora")}


def test_open_store_twice_is_idempotent(db_url: str) -> None:
    with open_store(db_url) as first, first.session() as s:
        s.add(Corpus(name="kept", source="spec"))
        s.commit()
    with open_store(db_url) as second, second.session() as s:
        assert s.query(Corpus.name).all() == [("kept",)]
        assert _tables(second) == TABLES | {"alembic_version"}
    assert current_revision(db_url) == head_revision()


def test_concurrent_opens_of_a_new_database_migrate_once(db_url: str) -> None:
    def open_and_close(_: int) -> str | None:
        open_store(db_url).close()
        return current_revision(db_url)

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(open_and_close, range(4))) == [head_revision()] * 4


def test_upgrade_false_leaves_a_new_database_empty(db_url: str) -> None:
    with open_store(db_url, upgrade=False) as store:
        assert _tables(store) == set()
    assert current_revision(db_url) is None


def test_downgrade_to_base_and_back(store: Store) -> None:
    downgrade(store.url, "base")
    assert _tables(store) <= {"alembic_version"}
    assert current_revision(store.url) is None
    upgrade(store.url)
    assert _tables(store) == TABLES | {"alembic_version"}
    assert current_revision(store.url) == head_revision()


def test_migration_matches_the_orm_metadata(store: Store) -> None:
    with store.engine.connect() as conn:
        from mmgen.store.keywords import include_object

        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": include_object})
        assert compare_metadata(context, Base.metadata) == []


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'new' / 'sub' / 'mmgen.db'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert (tmp_path / "new" / "sub" / "mmgen.db").is_file()


def test_sessions_keep_objects_readable_after_commit(store: Store) -> None:
    with store.session() as s:
        corpus = Corpus(name="c", source="spec")
        s.add(corpus)
        s.commit()
    assert corpus.id is not None and corpus.created_at is not None


def test_a_database_from_a_newer_mmgen_is_refused(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    with pytest.raises(StoreError, match="newer mmgen"):
        open_store(store.url)


def test_migrating_leaves_logging_alone(db_url: str) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    probe = logging.getLogger("mmgen.tests.probe")
    # alembic.ini would give "alembic" level INFO and a stderr handler. Compare with the state before,
    # not with NOTSET: another library in the same process (MLflow's import) sets its own level and handler.
    alembic = logging.getLogger("alembic")
    alembic_state = (alembic.level, list(alembic.handlers))
    open_store(db_url).close()
    assert root.handlers == handlers and root.level == level
    assert not probe.disabled
    assert (alembic.level, list(alembic.handlers)) == alembic_state


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "invalid database URL"),
        ("nosuchbackend://host/db", "unknown database backend"),
        ("postgresql+pg8000://u:pw@localhost/db", 'pip install "pg8000"'),
    ],
)
def test_bad_urls_raise_store_error(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_missing_psycopg_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an environment without it sees
    with pytest.raises(StoreError, match=r'pip install "psycopg\[binary\]"'):
        open_store("postgresql://u:pw@localhost/db")


def test_unreachable_server_masks_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        open_store("postgresql://mmgen:s3cret-pw@127.0.0.1:1/mmgen")
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "postgresql+psycopg://mmgen:***@127.0.0.1:1/mmgen" in message
    assert "refused" in message.lower() or "failed" in message.lower()


def test_sqlite_folder_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot create the folder"):
        open_store(f"sqlite:///{tmp_path / 'a-file' / 'mmgen.db'}")


def test_missing_migrations_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MIGRATIONS_ENV, str(tmp_path))
    with pytest.raises(StoreError, match="migrations not found"):
        open_store(f"sqlite:///{tmp_path / 'mmgen.db'}")


def test_urls_are_normalised_and_masked() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg2"
    assert mask_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_alembic_config_keeps_percent_signs_of_encoded_passwords() -> None:
    url = normalize_url("postgresql://u:p%40ss%25w@h/db")
    config = _alembic_config(url)
    assert config.get_main_option("sqlalchemy.url") == "postgresql+psycopg://u:p%40ss%25w@h/db"
    assert make_url(config.get_main_option("sqlalchemy.url") or "").password == "p@ss%w"


def _alembic(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), *args],
        capture_output=True, text=True, check=False, cwd=REPO / "migrations",
    )  # fmt: skip


def test_alembic_command_line_upgrades(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = _alembic("-x", f"url={url}", "upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert "Running upgrade  -> 0001" in done.stderr  # the CLI (only) logs through alembic.ini
    assert current_revision(url) == head_revision()


def test_alembic_offline_mode_prints_postgresql_sql() -> None:
    done = _alembic("-x", "url=postgresql://u@localhost/db", "upgrade", "head", "--sql")
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE items" in done.stdout
    assert "ON DELETE CASCADE" in done.stdout
