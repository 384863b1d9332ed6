"""`mmgen info`: what a workspace holds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from mmgen.index import list_presets
from mmgen.store.models import Corpus, IndexRecord, IndexRow, Item
from mmgen.workspace import Workspace


def workspace_info(ws: Workspace) -> dict[str, Any]:
    """Indexes with their encoder and vector counts, corpora with item counts, and the presets."""
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
                    }
                )
    finally:
        store.close()
    return {
        "workspace": str(ws.root),
        "store": mask_url(ws.db_url),
        "corpora": corpora,
        "indexes": indexes,
        "presets": {name: f"{p.factory}: {p.description}" for name, p in list_presets(ws.root).items()},
    }
