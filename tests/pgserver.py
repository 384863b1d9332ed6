"""Real PostgreSQL for tests: a server from `MMGEN_TEST_PG_URL` or a throwaway one, a fresh database per test.

Fixtures (load this module from a conftest, see `tests/store/conftest.py`, and re-export them):
- `pg_server_url` (session): superuser URL of the server's `postgres` database. From
  `MMGEN_TEST_PG_URL` when set (unreachable is then a failure: CI asked for it); otherwise a
  server started with `initdb` in a temp dir (as the `postgres` user when run as root) and
  stopped at the end of the session; when neither works, tests skip with the reason.
- `db_url`: parametrised `sqlite` (a file in `tmp_path`) and `postgresql` (a new database,
  dropped after the test), so one test runs on both backends.
`BACKENDS` and `database_url()` build the same for fixtures of wider scope.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ENV_URL = "MMGEN_TEST_PG_URL"
ENV_BINDIR = "MMGEN_PG_BINDIR"
DRIVER = "postgresql+psycopg"


class PgUnavailable(RuntimeError):
    """No PostgreSQL server could be reached or started; the message says why."""


def find_bindir() -> Path:
    """Folder with initdb and pg_ctl: `$MMGEN_PG_BINDIR`, `pg_config --bindir`, Debian's newest, or PATH."""
    candidates: list[Path] = []
    if os.environ.get(ENV_BINDIR):
        candidates.append(Path(os.environ[ENV_BINDIR]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    debian = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p).parent.name.isdigit()]
    candidates.extend(sorted(debian, key=lambda p: int(p.parent.name), reverse=True))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PgUnavailable(f"initdb/pg_ctl not found (install PostgreSQL or set {ENV_BINDIR})")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgServer:
    """A throwaway server in a temp dir; `stop()` shuts it down and deletes the dir."""

    url: str
    base: Path
    bindir: Path
    run_as: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the server (immediate mode: the data is thrown away) and remove its folder."""
        if not self.base.exists():
            return
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.base, ignore_errors=True)


def start_server() -> PgServer:
    """initdb a cluster in a temp dir and start it on 127.0.0.1 with a free port, trust auth, no fsync."""
    bindir = find_bindir()
    run_as: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="mmgen-pg-"))
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            raise PgUnavailable("running as root and there is no 'postgres' user to run the server as") from None
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(base, ignore_errors=True)
            raise PgUnavailable("running as root and `runuser` is not available")
        os.chown(base, user.pw_uid, user.pw_gid)
        run_as = [runuser, "-u", "postgres", "--"]
    data = base / "data"
    server = PgServer(url="", base=base, bindir=bindir, run_as=run_as)
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--locale=C"]
    init = subprocess.run(
        [*run_as, *initdb, "--encoding=UTF8", "--no-sync"], capture_output=True, text=True, check=False
    )
    if init.returncode != 0:
        server.stop()
        raise PgUnavailable(f"initdb failed: {(init.stderr or init.stdout).strip()[-500:]}")
    last_error = ""
    for _ in range(3):  # the free port can be taken between probing and binding
        port = _free_port()
        options = (
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -F "
            "-c full_page_writes=off -c synchronous_commit=off -c max_connections=50"
        )
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "30"]
        start = subprocess.run(
            [*run_as, *pg_ctl, "-o", options, "start"], capture_output=True, text=True, check=False
        )
        if start.returncode == 0:
            server.url = f"{DRIVER}://postgres@127.0.0.1:{port}/postgres"
            atexit.register(server.stop)  # also when the session dies before its finalizer
            return server
        log = (base / "server.log").read_text(errors="replace") if (base / "server.log").exists() else ""
        last_error = (start.stderr.strip() + "\n" + log.strip())[-500:]
    server.stop()
    raise PgUnavailable(f"pg_ctl start failed: {last_error}")


def check_server(url: str) -> None:
    """Connect once to `url`; PgUnavailable with the cause when that fails."""
    try:
        from sqlalchemy import create_engine, text
    except ImportError as exc:  # pragma: no cover - SQLAlchemy is a core dependency
        raise PgUnavailable(str(exc)) from exc
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 5})
    except ImportError as exc:
        raise PgUnavailable(f'driver missing ({exc}); pip install "psycopg[binary]"') from exc
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect means: not reachable
        raise PgUnavailable(f"cannot connect: {str(getattr(exc, 'orig', exc)).strip()}") from exc
    finally:
        engine.dispose()


def _admin(server_url: str, sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create a uniquely named database on the server, yield its URL, drop it afterwards."""
    from sqlalchemy.engine import make_url

    name = f"mmgen_test_{uuid.uuid4().hex[:12]}"
    _admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """Superuser URL of a reachable PostgreSQL server (see the module docstring)."""
    url = os.environ.get(ENV_URL)
    if url:
        try:
            check_server(url)
            problem = ""
        except PgUnavailable as exc:
            problem = str(exc)
        if problem:
            pytest.fail(f"{ENV_URL} is set but PostgreSQL is not reachable: {problem}", pytrace=False)
        yield url
        return
    try:
        server = start_server()
    except PgUnavailable as exc:
        pytest.skip(f"PostgreSQL not reachable: {ENV_URL} unset and no throwaway server: {exc}")
    try:
        check_server(server.url)
    except PgUnavailable as exc:
        server.stop()
        pytest.skip(f"PostgreSQL not reachable: started a throwaway server but {exc}")
    try:
        yield server.url
    finally:
        server.stop()


# Parametrise a fixture with these to run its tests once per backend.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def database_url(request: pytest.FixtureRequest, backend: str, folder: Path) -> Iterator[str]:
    """URL of an empty database on `backend`: a SQLite file in `folder`, or a new PostgreSQL database.

    For fixtures of any scope; CREATE DATABASE costs ~0.3 s, so a module-scoped fixture is worth
    it where many tests only read the same data.
    """
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'store' / 'mmgen.db'}"
        return
    server_url = request.getfixturevalue("pg_server_url")
    with fresh_database(server_url) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database, once per backend: SQLite in `tmp_path`, a new PostgreSQL database."""
    with database_url(request, request.param, tmp_path) as url:
        yield url
