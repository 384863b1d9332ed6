"""Model versions: retraining a model under its name keeps the version it replaces.

A model lives in `models/NAME/`. Before a trainer writes a new version there, the files of the
version already there (everything but the training state and caches) move to
`models/NAME/versions/N/`, and its `models` row is re-pointed at them, so indexes, codes and
outputs made with it stay reproducible. Versions are numbered 1, 2, ... in the order they were
written; `NAME@N` names one (`mmgen:product@1`, `--hasher default-64b@2`) and plain `NAME` is the
newest. A retrain that writes the same weights again is the same version: nothing is kept twice.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmgen.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    from mmgen.workspace import Workspace

VERSIONS = "versions"
MANIFEST = "manifest.json"
REMOVED = "removed.json"  # left in versions/N by `mmgen models rm`, so numbers are never reused
# What stays in models/NAME/ when its version is set aside: the resumable training state and caches.
KEEP = frozenset({VERSIONS, "train-state.pt", "train-state.pt.tmp", "text-cache"})
_AT = re.compile(r"^(?P<name>[^@]+)@(?P<n>\d+)$")


def split_version(spec: str) -> tuple[str, int | None]:
    """`NAME@N` -> (NAME, N); `NAME` -> (NAME, None). ConfigError for a malformed version."""
    if "@" not in spec:
        return spec, None
    m = _AT.match(spec)
    if m is None or int(m["n"]) < 1:
        raise ConfigError(f"{spec!r}: a model version is NAME@N with N = 1, 2, ... (see `mmgen models`)")
    return m["name"], int(m["n"])


def archived_numbers(folder: Path) -> list[int]:
    """Numbers of the versions kept under `folder/versions/`, ascending."""
    root = folder / VERSIONS
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / MANIFEST).is_file())


def current_number(folder: Path) -> int | None:
    """The number of the version in `folder` itself (one past the kept and removed ones), None when it holds none."""
    if not (folder / MANIFEST).is_file():
        return None
    root = folder / VERSIONS
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
    return max(taken, default=0) + 1


def version_folder(models_dir: Path, spec: str) -> Path:
    """Folder of `NAME` (the newest version) or `NAME@N` under `models_dir`.

    ModelLoadError names the versions that exist when N is not one of them.
    """
    name, n = split_version(spec)
    folder = models_dir / name
    if n is None or n == current_number(folder):
        return folder
    kept = folder / VERSIONS / str(n)
    if (kept / MANIFEST).is_file():
        return kept
    if (kept / REMOVED).is_file():
        raise ModelLoadError(f"version {n} of model {name!r} was removed (`mmgen models rm`)")
    have = [*archived_numbers(folder), *([current_number(folder)] if current_number(folder) else [])]
    listed = ", ".join(f"{name}@{k}" for k in have) or "none"
    raise ModelLoadError(f"model {name!r} has no version {n} (versions: {listed})")


def number_of(path: Path, models_dir: Path) -> int | None:
    """The version number of a model folder: versions/N -> N, models/NAME -> its current number."""
    if path.parent.name == VERSIONS and path.name.isdigit():
        return int(path.name)
    if path.parent == models_dir or path.parent.resolve() == models_dir.resolve():
        return current_number(path)
    return None


def find_checksum(models_dir: Path, name: str, checksum: str) -> Path | None:
    """The folder of `name`'s version whose manifest records `checksum`, newest first; None if none."""
    folder = models_dir / name
    for candidate in [folder, *(folder / VERSIONS / str(n) for n in reversed(archived_numbers(folder)))]:
        if _manifest(candidate).get("checksum") == checksum:
            return candidate
    return None


@dataclass
class SetAside:
    """The version moved out of the way of a new one (see `set_aside`)."""

    number: int
    folder: Path
    checksum: str | None


def set_aside(ws: Workspace, kind: str, name: str) -> SetAside | None:
    """Before a trainer writes a new version of `name`: keep the current one under versions/N.

    Returns what was moved (for `settle`), or None when the folder holds no finished model.
    """
    folder = ws.models_dir / name
    manifest = _manifest(folder)
    if not manifest:
        return None
    number = current_number(folder) or 1
    target = folder / VERSIONS / str(number)
    staging = folder / VERSIONS / f".{number}.moving"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for entry in sorted(folder.iterdir()):
        if entry.name not in KEEP and entry.name != MANIFEST:
            entry.rename(staging / entry.name)
    (folder / MANIFEST).rename(staging / MANIFEST)  # last: a kill before this leaves the version whole
    staging.rename(target)
    checksum = manifest.get("checksum")
    _repoint(ws, kind, name, folder, target, checksum)
    return SetAside(number, target, checksum if isinstance(checksum, str) else None)


def settle(ws: Workspace, kind: str, name: str, prior: SetAside | None, checksum: str) -> None:
    """After the new version is written and registered: drop the kept copy when it is the same weights."""
    if prior is None or prior.checksum != checksum:
        return
    shutil.rmtree(prior.folder, ignore_errors=True)
    _repoint(ws, kind, name, prior.folder, ws.models_dir / name, checksum)


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _repoint(ws: Workspace, kind: str, name: str, old: Path, new: Path, checksum: Any) -> None:
    """Point the `models` rows of (kind, name) that live at `old` (this checksum's) at `new`."""
    from sqlalchemy import select

    from mmgen.store import open_store
    from mmgen.store.models import ModelRecord

    with open_store(ws.db_url) as store, store.session(write=True) as session:
        rows = session.scalars(select(ModelRecord).filter_by(kind=kind, name=name)).all()
        for row in rows:
            if row.path and Path(row.path) == old and (checksum is None or row.checksum == checksum):
                row.path = str(new)
        session.commit()


def kept_version(models_dir: Path, encoder: str, checksum: str) -> str | None:
    """`mmgen:NAME@N` for the kept version of a retrained `mmgen:NAME` whose weights have `checksum`."""
    if not encoder.startswith("mmgen:") or "@" in encoder:
        return None
    name = encoder.removeprefix("mmgen:")
    if "/" in name or not (models_dir / name).is_dir():
        return None
    found = find_checksum(models_dir, name, checksum)
    if found is None or found == models_dir / name:
        return None
    return f"mmgen:{name}@{found.name}"


def list_models(ws: Workspace, kind: str | None = None) -> list[dict[str, Any]]:
    """Every registered model version: kind, name, version number, checksum, path, its training
    settings, the held-out metrics its manifest records, and what depends on it (indexes, outputs)."""
    from sqlalchemy import func, select

    from mmgen.store import open_store
    from mmgen.store.models import ModelRecord, Output

    out: list[dict[str, Any]] = []
    with open_store(ws.db_url) as store, store.session() as s:
        query = select(ModelRecord).order_by(ModelRecord.kind, ModelRecord.name, ModelRecord.id)
        rows = s.scalars(query if kind is None else query.where(ModelRecord.kind == kind)).all()
        counts = dict(s.execute(select(Output.model_id, func.count()).group_by(Output.model_id)).all())
        indexes = _index_checksums(ws, s)
        for row in rows:
            path = Path(row.path) if row.path else None
            present = path is not None and (path / MANIFEST).is_file() and _manifest(path).get("checksum") == row.checksum
            params = row.params or {}
            out.append({
                "id": int(row.id), "kind": row.kind, "name": row.name,
                "version": number_of(path, ws.models_dir) if present and path is not None else None,
                "checksum": row.checksum, "path": row.path, "present": present,
                "created": row.created_at.isoformat() if row.created_at else None,
                "config": params.get("config") or {},
                "steps": params.get("steps"),
                "metrics": params.get("metrics") or params.get("eval") or {},
                "outputs": int(counts.get(row.id, 0)),
                "indexes": _dependent_indexes(indexes, row.kind, row.checksum),
            })  # fmt: skip
    return out


def remove_version(ws: Workspace, spec: str, kind: str | None = None, force: bool = False) -> dict[str, Any]:
    """Delete one kept version's files and row (`NAME@N`), refusing while indexes or outputs
    depend on it unless `force` (outputs then keep their rows, with no model)."""
    from mmgen.errors import UnknownNameError
    from mmgen.store import open_store
    from mmgen.store.models import ModelRecord

    name, n = split_version(spec)
    if n is None:
        raise ConfigError(f"give a version to remove: {name}@N (see `mmgen models`)")
    matches = [m for m in list_models(ws, kind) if m["name"] == name and m["version"] == n]
    if not matches:
        have = [f"{m['kind']} {m['name']}@{m['version']}" for m in list_models(ws, kind) if m["name"] == name]
        raise UnknownNameError("model version", spec, have)
    if len(matches) > 1:
        raise ConfigError(f"{spec} names models of several kinds ({', '.join(m['kind'] for m in matches)}): add --kind")
    found = matches[0]
    if (found["outputs"] or found["indexes"]) and not force:
        raise ConfigError(
            f"{found['kind']} {spec} is used by {found['outputs']} output(s) and index(es) "
            f"{', '.join(found['indexes']) or 'none'}; removing it makes them unreproducible (add --force)"
        )
    folder = Path(found["path"])
    current = folder == ws.models_dir / name
    if current:
        raise ConfigError(f"{spec} is the newest version of {name!r}; only kept older versions can be removed")
    with open_store(ws.db_url) as store, store.session(write=True) as session:
        row = session.get(ModelRecord, found["id"])
        if row is not None:
            session.delete(row)
        session.commit()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REMOVED).write_text(json.dumps({"checksum": found["checksum"], "kind": found["kind"]}) + "\n")
    return found


def _index_checksums(ws: Workspace, session: Any) -> list[tuple[str, str, str | None]]:
    """(name, encoder checksum, hasher checksum) of every index, read once."""
    from sqlalchemy import select

    from mmgen.store.models import IndexRecord

    rows = session.execute(select(IndexRecord.name, IndexRecord.encoder_checksum).order_by(IndexRecord.name)).all()
    return [(name, enc, (_manifest(ws.index_dir(name)).get("hash") or {}).get("checksum")) for name, enc in rows]


def _dependent_indexes(indexes: list[tuple[str, str, str | None]], kind: str, checksum: str | None) -> list[str]:
    """Names of the indexes built with this encoder, or keeping this hasher's codes."""
    if kind not in ("encoder", "hasher") or not checksum:
        return []
    return [name for name, enc, hasher in indexes if (enc if kind == "encoder" else hasher) == checksum]
