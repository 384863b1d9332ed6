"""`mmgen check --repair`: migrate the store, prune what cannot be rebuilt (asked), rebuild caches, register models."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sqlalchemy import delete, exists, select

from mmgen.check.models import MODEL_KINDS
from mmgen.check.report import Action
from mmgen.errors import MmgenError
from mmgen.index import IndexFolder
from mmgen.index.folder import CODES_SUFFIX
from mmgen.store.models import IndexRecord, IndexRow, Item

if TYPE_CHECKING:
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace


def repair(ws: Workspace, actions: list[Action]) -> list[str]:
    """Carry out the actions: migrate, prune rows and items, rebuild caches per index, register models."""
    from mmgen.store.db import open_store, upgrade

    done: list[str] = []
    if any(a.kind == "migrate" for a in actions):
        upgrade(ws.db_url)
        done.append("store: migrated to head")
    store = open_store(ws.db_url, upgrade=False)
    try:
        indexes = {a.index for a in actions if a.index and a.kind in ("faiss", "codes", "reencode", "drop-rows")}
        for index in sorted(indexes):
            done += _repair_index(ws, store, index, [a for a in actions if a.index == index])
        items = sorted({i for a in actions if a.kind == "drop-items" for i in a.ids})
        if items:
            deleted = 0
            with store.session() as s:
                for start in range(0, len(items), 500):
                    # still unindexed: an indexer may have embedded some since the check
                    deleted += s.execute(delete(Item).where(Item.id.in_(items[start : start + 500]),
                                                            ~exists().where(IndexRow.item_id == Item.id))).rowcount
                s.commit()
            done.append(f"store: deleted {deleted} items no index refers to (--prune)")
    finally:
        store.close()
    for a in actions:
        if a.kind == "register" and a.model:
            _register(ws, a.model)
            done.append(f"model {a.model}: registered in the store")
    return done


def _repair_index(ws: Workspace, store: Store, name: str, actions: list[Action]) -> list[str]:
    """Drop broken rows (pruning), then rebuild the index's FAISS and code caches from its vector files."""
    from mmgen.catalog import open_index_hasher, sync_index
    from mmgen.index.binary import BinaryIndex

    with store.session() as s:
        rec = s.scalar(select(IndexRecord).where(IndexRecord.name == name))
    if rec is None:
        return [f"index {name}: gone from the store, nothing repaired"]
    folder = IndexFolder.open(ws.index_dir(name))
    done = []
    with folder.lock(wait=False) as got:
        if not got:
            return [f"index {name}: not repaired, an indexer holds its lock"]
        for a in actions:
            if a.kind == "drop-rows":
                with store.session() as s:
                    s.execute(delete(IndexRow).where(IndexRow.index_id == rec.id, IndexRow.modality == a.modality,
                                                     IndexRow.row_id.in_(list(a.ids))))  # fmt: skip
                    s.commit()
                done.append(f"index {name} {a.modality}: deleted {len(a.ids)} rows whose vectors are unusable (--prune)")
            if a.fresh and a.kind == "faiss":  # a cache that cannot be trusted is rebuilt from nothing
                folder.discard_faiss(a.modality)
            if a.fresh and a.kind == "codes":
                BinaryIndex.delete_files(folder.root / f"{a.modality}{CODES_SUFFIX}")
        hasher = None
        if folder.hash:
            try:
                reencode = any(a.kind == "reencode" for a in actions)
                hasher = open_index_hasher(ws, store, rec.id, folder, folder.hash["name"] if reencode else None, None)
            except MmgenError as exc:
                done.append(f"index {name}: codes not rebuilt ({exc})")
        try:
            notes = sync_index(store, rec.id, folder, hasher)
        except MmgenError as exc:  # e.g. rows past the end of a vector file: reported again by the re-check
            return [*done, f"index {name}: caches not rebuilt ({exc})"]
    changes = ", ".join(f"{k} {v}" for k, v in notes.items())
    return [*done, f"index {name}: caches rebuilt from the vector files ({changes})"]


def _register(ws: Workspace, name: str) -> None:
    from mmgen.artifacts import register_model

    folder = ws.models_dir / name
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    register_model(ws, MODEL_KINDS[manifest["type"]], name, folder, str(manifest["checksum"]), manifest)
