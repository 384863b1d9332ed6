"""Workspace layout and permissions: a new workspace folder is private, so others cannot reach its SQLite file."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmgen.store import open_store
from mmgen.workspace import DB_FILENAME, Workspace

NOBODY = 65534


@pytest.fixture()
def open_dir() -> Iterator[Path]:
    """A folder any user can enter (pytest's own temp folders are private, which would prove nothing)."""
    with tempfile.TemporaryDirectory(prefix="mmgen-ws-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_workspace_root_and_its_store_are_private(open_dir: Path) -> None:
    ws = Workspace.resolve(open_dir / "new" / "ws")
    assert not ws.root.exists()  # resolving a name creates nothing (a typo leaves no folder behind)
    open_store(ws.db_url).close()
    assert ws.root.is_dir() and _mode(ws.root) & 0o077 == 0  # neither group nor others may list or enter it
    db = ws.root / DB_FILENAME
    assert db.is_file() and _mode(ws.root) & 0o077 == 0
    assert ws.db_url == f"sqlite:///{db}"


def test_an_existing_workspace_keeps_its_mode(open_dir: Path) -> None:
    shared = open_dir / "shared"
    shared.mkdir(mode=0o750)
    os.chmod(shared, 0o750)
    assert _mode(Workspace.resolve(shared).root) == 0o750


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_list_the_workspace_or_read_its_store(open_dir: Path) -> None:
    ws = Workspace.resolve(open_dir / "ws")
    open_store(ws.db_url).close()
    beside = open_dir / "readable.txt"
    beside.write_text("x")
    beside.chmod(0o644)

    def as_nobody(*cmd: str) -> int:
        return subprocess.run(list(cmd), user=NOBODY, capture_output=True, check=False).returncode

    assert as_nobody("/bin/cat", str(beside)) == 0  # the check itself works: nobody reads a file beside it
    assert as_nobody("/bin/ls", str(ws.root)) != 0
    assert as_nobody("/bin/cat", str(ws.root / DB_FILENAME)) != 0
