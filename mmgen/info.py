"""`mmgen info`: what a workspace holds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from mmgen.index import list_presets
from mmgen.store.models import Corpus, IndexRecord, IndexRow, Item, ModelRecord
from mmgen.workspace import Workspace


def workspace_info(ws: Workspace) -> dict[str, Any]:
    """Indexes (encoder, vector counts, binary codes), corpora with item counts, trained models, and the presets."""
    from mmgen.store.db import mask_url, open_store

    store = open_store(ws.db_url)
    try:
        with store.session() as s:
            corpora = {
                name: int(n)
                for name, n in s.execute(
                    select(Corpus.name, func.count(Item.id)).outerjoin(Item).group_by(Corpus.name).order_by(Corpus.name)
                )
            }
            licences = {
                name: licence
                for name, licence in s.execute(select(Corpus.name, Corpus.licence).order_by(Corpus.name))
                if licence
            }
            indexes = []
            for rec in s.scalars(select(IndexRecord).order_by(IndexRecord.name)):
                counts = dict(
                    s.execute(
                        select(IndexRow.modality, func.count(IndexRow.id))
                        .where(IndexRow.index_id == rec.id)
                        .group_by(IndexRow.modality)
                    ).all()
                )
                indexes.append(
                    {
                        "name": rec.name,
                        "encoder": rec.encoder,
                        "dim": rec.dim,
                        "factory": rec.factory,
                        "vectors": {m: int(n) for m, n in sorted(counts.items())},
                        "path": str(ws.index_dir(rec.name)),
                        "hash": _codes_info(ws, rec.name),
                    }
                )
            latest: dict[tuple[str, str], ModelRecord] = {}
            for m in s.scalars(select(ModelRecord).order_by(ModelRecord.id)):
                latest[(m.kind, m.name)] = m  # a retrained name keeps its newest row
            models = [
                {"kind": m.kind, "name": m.name, "id": m.id, "path": m.path, "created": m.created_at.isoformat()}
                for (_, _), m in sorted(latest.items())
            ]
    finally:
        store.close()
    return {
        "workspace": str(ws.root),
        "store": mask_url(ws.db_url),
        "corpora": corpora,
        "licences": licences,
        "indexes": indexes,
        "models": models,
        "presets": {name: f"{p.factory}: {p.description}" for name, p in list_presets(ws.root).items()},
    }


def _codes_info(ws: Workspace, name: str) -> dict[str, Any] | None:
    """The binary codes an index keeps (hasher, bits, preset, counts per modality), from its manifest."""
    import json

    path = ws.index_dir(name) / "manifest.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8")).get("hash")
    except (OSError, ValueError):
        return None
    if not info:
        return None
    return {
        "hasher": info.get("name"),
        "bits": info.get("bits"),
        "preset": (info.get("preset") or {}).get("name"),
        "codes": {m: e.get("count", 0) for m, e in (info.get("modalities") or {}).items()},
    }
