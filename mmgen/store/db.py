"""Open the SQL store: one engine per URL, per-backend connection settings, Alembic applied on open."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mmgen.errors import ConnectionLostError, DiskFullError, StoreError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_ENV = "MMGEN_MIGRATIONS"
SQLITE_BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10
# Serialises concurrent `open_store` calls that would migrate the same PostgreSQL database.
_PG_MIGRATION_LOCK = 0x6D6D67656E  # "mmgen"
# Execution option naming the statement that opens a SQLite transaction (see `_sqlite_settings`).
_SQLITE_BEGIN = "mmgen_sqlite_begin"
_SQLITE_FULL = 13  # sqlite3's SQLITE_FULL: "database or disk is full"

# Python package to install for each SQLAlchemy driver name.
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "pymysql": "PyMySQL",
    "mysqldb": "mysqlclient",
    "mysqlconnector": "mysql-connector-python",
    "pyodbc": "pyodbc",
    "oracledb": "oracledb",
}


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; bare `postgresql://` (and `postgres://`) mean the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"invalid database URL {mask_url(url)!r}: {exc}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def mask_url(url: str | URL) -> str:
    """The URL as text with its password replaced by `***`, for messages and logs."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def migrations_dir() -> Path:
    """The Alembic script folder: `$MMGEN_MIGRATIONS`, else the one that ships with mmgen (`mmgen.resources`)."""
    from mmgen.resources import migrations_path

    override = os.environ.get(MIGRATIONS_ENV)
    path = Path(override).expanduser() if override else migrations_path()
    if not (path / "env.py").is_file():
        hint = f"{MIGRATIONS_ENV} is set to {override!r}" if override else f"set {MIGRATIONS_ENV} to the folder"
        raise StoreError(f"Alembic migrations not found at {path} (no env.py there); {hint}")
    return path


class Store:
    """An open SQL store: an engine and a session factory."""

    def __init__(self, engine: Engine) -> None:
        self.engine: Engine = engine
        self.url: str = engine.url.render_as_string(hide_password=False)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        sqlite = engine.dialect.name == "sqlite"
        writer = engine.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"}) if sqlite else engine
        self._write_sessions = sessionmaker(writer, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """Backend name: `sqlite`, `postgresql`, ..."""
        return self.engine.dialect.name

    def session(self, write: bool = False) -> Session:
        """A new ORM session bound to this store (objects stay readable after commit).

        `write=True` is for a transaction that reads and then writes: on SQLite it starts with
        BEGIN IMMEDIATE, taking the write lock (waiting out the busy timeout) before its first read.
        A deferred transaction that read before another process committed cannot upgrade to a
        writer: SQLite fails it at once with "database is locked" (SQLITE_BUSY_SNAPSHOT), which no
        busy timeout covers. In WAL mode readers never wait on it.
        """
        return (self._write_sessions if write else self._sessions)()

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({mask_url(self.engine.url)!r})"


def create_store_engine(url: str | URL) -> Engine:
    """Create (not connect) an engine with mmgen's settings for its backend; raises StoreError."""
    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        _make_sqlite_parent(parsed)
    else:
        kwargs["pool_pre_ping"] = True
    if backend == "postgresql" and parsed.get_driver_name() == "psycopg" and "connect_timeout" not in parsed.query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError as exc:
        raise StoreError(f"unknown database backend in URL {mask_url(parsed)!r}: {exc}") from exc
    except ImportError as exc:
        driver = parsed.get_driver_name()
        package = DRIVER_PACKAGES.get(driver, exc.name or driver)
        raise StoreError(
            f"the database driver {driver!r} for {mask_url(parsed)!r} is not installed; "
            f'install it with: pip install "{package}"'
        ) from exc
    except ArgumentError as exc:
        raise StoreError(f"invalid database URL {mask_url(parsed)!r}: {exc}") from exc
    if backend == "sqlite":
        _sqlite_settings(engine)
    _disk_full_errors(engine)
    return engine


def _disk_full_errors(engine: Engine) -> None:
    """Raise DiskFullError in place of the backend's "disk full" (SQLite SQLITE_FULL, PostgreSQL disk_full 53100)."""
    where = engine.url.database if engine.dialect.name == "sqlite" else mask_url(engine.url)

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> None:
        orig = context.original_exception
        pg_state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if getattr(orig, "sqlite_errorcode", None) == _SQLITE_FULL or pg_state == "53100":
            raise DiskFullError("the SQL store", where or "?") from orig
        if context.is_disconnect:  # the server went away, or an administrator ended this session
            reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
            raise ConnectionLostError(
                f"the connection to the SQL store {where or '?'} was lost ({reason}); what was committed before "
                "it is kept: run the same command again to resume"
            ) from orig


def _make_sqlite_parent(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("uri"):
        return
    try:
        from mmgen.workspace import make_private_root

        make_private_root(Path(database).expanduser().parent)  # a new workspace: 0o700, files below stay private
    except OSError as exc:
        raise StoreError(f"cannot create the folder of the SQLite database {database}: {exc}") from exc


def _sqlite_settings(engine: Engine) -> None:
    """WAL, foreign keys and a busy timeout on every connection; SQLAlchemy, not pysqlite, opens transactions.

    pysqlite would otherwise start transactions only before DML, leaving DDL (migrations) and
    SAVEPOINTs outside them; this is the recipe from SQLAlchemy's SQLite dialect documentation.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get(_SQLITE_BEGIN, "BEGIN"))


def _enable_wal(cursor: Any) -> None:
    """Switch to WAL (persistent in the file), retrying: the switch ignores busy_timeout when new connections race."""
    import sqlite3

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def _errors(url: str | URL, action: str) -> Iterator[None]:
    """Turn database and Alembic failures into a StoreError naming the (masked) URL and the cause."""
    from alembic.util import CommandError

    try:
        yield
    except StoreError:
        raise
    except DBAPIError as exc:
        cause = str(exc.orig).strip() if exc.orig is not None else str(exc)
        raise StoreError(f"cannot {action} {mask_url(url)}: {cause}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot {action} {mask_url(url)}: {exc}") from exc
    except CommandError as exc:
        hint = ""
        if "Can't locate revision" in str(exc):
            hint = " (was the database migrated by a newer mmgen? upgrade mmgen, or use another database)"
        raise StoreError(f"cannot {action} {mask_url(url)}: {exc}{hint}") from exc


def _alembic_config(url: URL) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolates "%": escape it (URL-encoded passwords contain it).
    config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction, serialised against concurrent migrations, for Alembic to use."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # Batch migrations copy and drop tables: with foreign keys on, a DROP would cascade.
            # The pragma is ignored inside a transaction, so set it on the raw connection first.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
            conn.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"})
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
                yield conn
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise StoreError(f"migration left rows violating foreign keys: {broken[:5]}")
        finally:
            if sqlite and not conn.invalidated:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]


def _migrate(engine: Engine, step: Callable[[Config], None]) -> None:
    """Run one Alembic command on a migration connection of `engine`."""
    config = _alembic_config(engine.url)
    with migration_connection(engine) as conn:
        config.attributes["connection"] = conn
        step(config)


def head_revision() -> str:
    """The newest revision of the shipped migrations."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory(str(migrations_dir())).get_heads()
    if len(heads) != 1:
        raise StoreError(f"the migrations folder {migrations_dir()} has {len(heads)} heads, expected one")
    return heads[0]


def _current(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _upgrade_engine(engine: Engine, revision: str) -> None:
    from alembic import command

    if revision == "head":
        with engine.connect() as conn:
            if _current(conn) == head_revision():
                return
    _migrate(engine, lambda config: command.upgrade(config, revision))


def open_store(url: str, *, upgrade: bool = True) -> Store:
    """Connect to the store at `url` and, unless `upgrade=False`, migrate its schema to head."""
    engine = create_store_engine(url)
    try:
        with _errors(engine.url, "open the database"):
            if upgrade:
                _upgrade_engine(engine, "head")
            else:
                with engine.connect():
                    pass
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    engine = create_store_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision` (default: the newest)."""
    with _engine(url) as engine, _errors(engine.url, f"upgrade to {revision}"):
        _upgrade_engine(engine, revision)


def downgrade(url: str, revision: str) -> None:
    """Revert Alembic migrations down to `revision` (`base` drops every table)."""
    from alembic import command

    with _engine(url) as engine, _errors(engine.url, f"downgrade to {revision}"):
        _migrate(engine, lambda config: command.downgrade(config, revision))


def current_revision(url: str) -> str | None:
    """The Alembic revision the database is at, or None when it was never migrated."""
    with _engine(url) as engine, _errors(engine.url, "read the revision of"), engine.connect() as conn:
        return _current(conn)
