"""Saved artifacts: atomic JSON writes, model manifests and the SQL `models` registry.

Every model type (encoder, hasher, captioner, generator) saves a folder WORKSPACE/models/NAME with
its weights and a JSON model manifest (`manifest.json`: type, format, checksum, what it was
trained on). This module owns the parts they share, so that loading a model never needs the
trainer that wrote it:

- `write_json_atomic`: write to a temporary file, fsync, rename (a reader sees the old file or the
  new one, never half of one);
- `read_model_manifest`: read a model manifest and check its type and format;
- `register_model`: insert or update the model's row in SQL (`kind`, `name`, version = checksum
  prefix).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmgen.errors import ModelLoadError

if TYPE_CHECKING:
    from mmgen.workspace import Workspace

MODEL_MANIFEST = "manifest.json"
# Model kinds in the `models` table.
MODEL_KINDS = ("encoder", "hasher", "captioner", "generator")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically and durably (temporary file, fsync, rename)."""
    from mmgen.durable import replacing

    with replacing(path, path.name) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str), encoding="utf-8")


def read_model_manifest(path: Path, manifest_type: str, max_format: int, label: str, missing: str) -> dict[str, Any]:
    """A saved model's manifest, checked: ModelLoadError when it is missing (`missing` is the
    message), unreadable, of another model type (`label` names the expected one) or written by a
    newer mmgen than `max_format` allows.
    """
    if not path.is_file():
        raise ModelLoadError(missing)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"unreadable {label} manifest {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("type") != manifest_type:
        found = manifest.get("type", "unknown") if isinstance(manifest, dict) else "unknown"
        raise ModelLoadError(f"{path.parent} holds a {found} model, not a {label}")
    if int(manifest.get("format", 0)) > max_format:
        raise ModelLoadError(f"{path} was written by a newer mmgen (format {manifest['format']})")
    return manifest


def register_model(ws: Workspace, kind: str, name: str, path: Path, checksum: str, params: dict[str, Any]) -> int:
    """Insert or update the `models` row of a saved model (version = checksum prefix); returns its id.

    `params` is stored as JSON (values that JSON cannot hold are written as strings).
    """
    from sqlalchemy import select

    from mmgen.store import open_store
    from mmgen.store.models import ModelRecord

    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    from mmgen.versions import split_version

    name = split_version(name)[0]  # NAME@N is a version of NAME
    version = checksum[:16]
    with open_store(ws.db_url) as store, store.session(write=True) as session:  # reads, then writes
        row = session.scalars(select(ModelRecord).filter_by(kind=kind, name=name, version=version)).one_or_none()
        if row is None:
            row = ModelRecord(kind=kind, name=name, version=version)
            session.add(row)
        row.path = str(path)
        row.checksum = checksum
        row.params = json.loads(json.dumps(params, default=str))
        session.commit()
        return int(row.id)
