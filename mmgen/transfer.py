"""Moving a whole workspace: `mmgen export workspace` and `mmgen import`.

An export is a folder (or a `.tar`/`.tar.gz` of one) holding:
- `store/TABLE.jsonl`: every row of every table of the SQL store, ids included, one JSON object
  per line (times as ISO 8601);
- `files/`: the workspace's files (index folders with their vector files and FAISS caches,
  `models/` with every kept version, `outputs/`), without the SQLite files, locks, temporary
  files and the training caches under `cache/` (derivable, and large);
- `export.json`: format, mmgen version, the store's Alembic revision, the source root, row counts
  per table and the sha256 of every other file of the export.

`import_workspace` verifies every checksum first, refuses a target store that already holds
rows, inserts the rows with their ids in foreign-key order (PostgreSQL's id sequences are moved
past them), rewrites the paths that pointed inside the old workspace (model folders, generated
files, items stored there) to the new root, and copies the files. The target may be another
backend: an export of a SQLite workspace imports into PostgreSQL and back. Item files outside the
workspace (a user's corpora) are referenced, not copied: they must exist at the same paths.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mmgen
from mmgen.errors import ConfigError, DataError, StoreError

if TYPE_CHECKING:
    from sqlalchemy import Table

    from mmgen.workspace import Workspace

FORMAT = 1
EXPORT_MANIFEST = "export.json"
SKIPPED_TOP = frozenset({"cache"})  # derivable training caches
_SKIPPED_SUFFIXES = (".tmp", "-wal", "-shm", "-journal")
_CHUNK = 1000
# Path columns rewritten when they point inside the old workspace root.
_PATH_COLUMNS = {"models": ("path",), "outputs": ("file_uri",), "items": ("uri",), "prompts": ("image_uri",)}


@dataclass
class TransferReport:
    """What an export or import moved."""

    path: str
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0
    revision: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return dict(self.__dict__)


def export_workspace(ws: Workspace, dest: Path) -> TransferReport:
    """Write the workspace's store rows and files to `dest` (a new folder, or a .tar / .tar.gz file)."""
    from sqlalchemy import select

    from mmgen.store import open_store
    from mmgen.store.db import _current

    dest = dest.expanduser().resolve()
    archive = dest.name.endswith((".tar", ".tar.gz", ".tgz"))
    if dest.exists():
        raise ConfigError(f"{dest} exists already; export into a new folder or file")
    if not ws.root.is_dir():
        raise DataError(f"no workspace at {ws.root}")
    staging = Path(tempfile.mkdtemp(prefix=".mmgen-export-", dir=dest.parent)) if archive else dest
    staging.mkdir(parents=True, exist_ok=True)
    report = TransferReport(str(dest))
    try:
        (staging / "store").mkdir()
        with open_store(ws.db_url, upgrade=False) as store:
            with store.engine.connect() as conn:
                report.revision = _current(conn)
            with store.session() as s:
                for table in _tables():
                    with open(staging / "store" / f"{table.name}.jsonl", "w", encoding="utf-8") as fh:
                        n = 0
                        for row in s.execute(select(table).order_by(*table.primary_key.columns)).mappings():
                            fh.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
                            n += 1
                    report.rows[table.name] = n
        for src in _workspace_files(ws.root):
            target = staging / "files" / src.relative_to(ws.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            report.files += 1
            report.bytes += src.stat().st_size
        manifest = {
            "format": FORMAT, "mmgen": mmgen.__version__, "revision": report.revision, "root": str(ws.root),
            "rows": report.rows, "sha256": {str(p.relative_to(staging)): _sha256(p) for p in _files(staging)},
        }  # fmt: skip
        (staging / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if archive:
            tmp = dest.with_name(dest.name + ".tmp")
            with tarfile.open(tmp, "w:gz" if dest.name.endswith(("gz", ".tgz")) else "w") as tar:
                for path in sorted(staging.iterdir()):
                    tar.add(path, arcname=path.name)
            tmp.replace(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if archive:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def import_workspace(src: Path, ws: Workspace) -> TransferReport:
    """Restore an export into `ws` (its store must be empty): rows with their ids, then the files."""
    src = src.expanduser().resolve()
    if not src.exists():
        raise DataError(f"no export at {src}")
    if src.is_dir():
        return _import_folder(src, ws)
    with tempfile.TemporaryDirectory(prefix=".mmgen-import-") as tmp:
        try:
            with tarfile.open(src) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"{src}: not a readable export archive ({exc})") from exc
        return _import_folder(Path(tmp), ws, shown=str(src))


def _import_folder(folder: Path, ws: Workspace, shown: str | None = None) -> TransferReport:
    from sqlalchemy import func, insert, select, text

    from mmgen.store import open_store
    from mmgen.store.db import head_revision

    manifest = _verified(folder, shown or str(folder))
    if manifest.get("revision") != head_revision():
        raise StoreError(
            f"the export's store is at revision {manifest.get('revision')}, this mmgen's at {head_revision()}: "
            "run `mmgen db upgrade` on the source workspace and export again"
        )
    old_root, new_root = str(manifest["root"]), str(ws.root)
    report = TransferReport(shown or str(folder), revision=manifest["revision"])
    with open_store(ws.db_url) as store:
        with store.session() as s:
            busy = [t.name for t in _tables() if s.scalar(select(func.count()).select_from(t))]
        if busy:
            raise StoreError(f"the target store already holds rows ({', '.join(busy)}); import into an empty one")
        with store.session(write=True) as s:
            for table in _tables():
                rows = [_restored(table, json.loads(line), old_root, new_root)
                        for line in _lines(folder / "store" / f"{table.name}.jsonl")]  # fmt: skip
                for start in range(0, len(rows), _CHUNK):
                    s.execute(insert(table), rows[start : start + _CHUNK])
                report.rows[table.name] = len(rows)
            if store.dialect == "postgresql":  # ids were given: move each sequence past them
                for table in _tables():
                    if "id" in table.c:
                        s.execute(text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                            f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
                        ))  # fmt: skip
            s.commit()
    files = folder / "files"
    for path in _files(files) if files.is_dir() else []:
        target = ws.root / path.relative_to(files)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        report.files += 1
        report.bytes += path.stat().st_size
    return report


def _verified(folder: Path, shown: str) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / EXPORT_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{shown}: no readable {EXPORT_MANIFEST} (not an mmgen export?)") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{shown}: export format {manifest.get('format') if isinstance(manifest, dict) else '?'} "
                        f"is not {FORMAT}")  # fmt: skip
    listed = manifest.get("sha256") or {}
    present = {str(p.relative_to(folder)) for p in _files(folder)} - {EXPORT_MANIFEST}
    if present != set(listed):
        odd = sorted(present ^ set(listed))
        raise DataError(f"{shown}: files differ from the export's list ({', '.join(odd[:5])}); the export is incomplete")
    for name, digest in listed.items():
        if _sha256(folder / name) != digest:
            raise DataError(f"{shown}: {name} does not match its checksum; the export is damaged")
    return manifest


def _tables() -> list[Table]:
    from mmgen.store.models import Base

    return [t for t in Base.metadata.sorted_tables]


def _workspace_files(root: Path) -> list[Path]:
    out = []
    for path in _files(root):
        rel = path.relative_to(root)
        if rel.parts[0] in SKIPPED_TOP or path.name == ".lock" or path.name.startswith("mmgen.db"):
            continue
        if path.name.endswith(_SKIPPED_SUFFIXES):
            continue
        out.append(path)
    return out


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.is_file() else []


def _restored(table: Table, row: dict[str, Any], old_root: str, new_root: str) -> dict[str, Any]:
    from sqlalchemy import Date, DateTime

    out: dict[str, Any] = {}
    for name, value in row.items():
        if name not in table.c:
            continue
        column = table.c[name]
        if value is not None and isinstance(column.type, (DateTime, Date)):
            value = datetime.fromisoformat(value)
        elif isinstance(value, str) and name in _PATH_COLUMNS.get(table.name, ()) and _inside(value, old_root):
            value = new_root + value[len(old_root) :]
        out[name] = value
    return out


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def _sha256(path: Path) -> str:
    from mmgen.data.checksums import file_sha256

    return file_sha256(path)
