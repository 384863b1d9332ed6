"""Alembic environment of the mmgen SQL store.

Called two ways: programmatically by `mmgen.store.db` (which passes an open connection in
`config.attributes["connection"]` and must not have its logging reconfigured), or by the
`alembic` command line with `alembic.ini` (URL from `-x url=...`, `sqlalchemy.url`, `MMGEN_DB`,
or the default workspace).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from mmgen.store.db import create_store_engine, migration_connection, normalize_url
from mmgen.store.keywords import include_object
from mmgen.store.models import Base
from mmgen.workspace import Workspace

config = context.config
target_metadata = Base.metadata

# Only the alembic CLI (cmd_opts set) may configure logging; a library call must leave it alone.
if config.cmd_opts is not None and config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    return normalize_url(url or Workspace.resolve().db_url).render_as_string(hide_password=False)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        include_object=include_object,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`) without a database."""
    url = _url()
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate the database of the given connection, or of the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_store_engine(_url())
    try:
        with migration_connection(engine) as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
