"""What SQL says an index holds, and the one reader of its rows and vectors.

SQL is the truth (`index_rows`: which row of which modality's vector file is live, for which item);
vector files hold the vectors; FAISS files are caches of them.

- `pick_index_name`: the given index, else `default`, else the only one;
- `live_row_ids` / `sql_row_state`: the live row ids, and their (count, max row id);
- `load_vectors`: an index's live rows per modality, joined to their items, with their vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select, true

from mmgen.errors import ConfigError, ManifestMismatchError, VectorIndexError
from mmgen.index.folder import MODALITIES, IndexFolder
from mmgen.store.models import IndexRecord, IndexRow, Item

if TYPE_CHECKING:
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace

DEFAULT_INDEX = "default"


def pick_index_name(store: Store, name: str | None) -> str:
    """The given index, else `default`, else the only index; errors list what exists."""
    with store.session() as s:
        names = list(s.scalars(select(IndexRecord.name).order_by(IndexRecord.name)))
    if not names:
        raise VectorIndexError("the workspace has no index yet; build one with `mmgen index SOURCE`")
    if name is not None:
        if name not in names:
            raise VectorIndexError(f"no index named {name!r}; indexes here: {', '.join(names)}")
        return name
    if DEFAULT_INDEX in names:
        return DEFAULT_INDEX
    if len(names) == 1:
        return names[0]
    raise ConfigError(f"several indexes here ({', '.join(names)}); choose one with --index")


def live_row_ids(store: Store, index_id: int, modality: str) -> np.ndarray:
    """Row ids SQL holds for one index and modality."""
    with store.session() as s:
        ids = s.scalars(
            select(IndexRow.row_id).where(IndexRow.index_id == index_id, IndexRow.modality == modality)
        ).all()
    return np.asarray(ids, dtype=np.int64)


def sql_row_state(store: Store, index_id: int, modality: str) -> tuple[int, int]:
    """(count, max row id) of the live rows, compared with the FAISS file's to detect staleness."""
    with store.session() as s:
        count, top = s.execute(
            select(func.count(IndexRow.id), func.max(IndexRow.row_id)).where(
                IndexRow.index_id == index_id, IndexRow.modality == modality
            )
        ).one()
    return int(count), int(top) if top is not None else -1


@dataclass
class ItemInfo:
    """The SQL fields of an item that readers of vectors need."""

    uri: str | None
    text: str | None
    group: str | None
    meta: dict[str, Any]


@dataclass
class ModalityRows:
    """The live rows of one modality, ordered by item id, with their vectors (None: not loaded)."""

    row_ids: np.ndarray  # int64
    item_ids: np.ndarray  # int64
    sha256: list[str | None]  # the content hash the indexer recorded (the image file's, or the text's)
    vectors: np.ndarray | None = None  # (n, dim) float32, L2-normalised

    def __len__(self) -> int:
        return len(self.row_ids)


@dataclass
class LoadedIndex:
    """An index's live rows per modality, joined to their items, and its vectors in RAM."""

    name: str
    index_id: int
    encoder: str
    encoder_checksum: str
    dim: int
    folder: IndexFolder
    modalities: dict[str, ModalityRows] = field(default_factory=dict)
    items: dict[int, ItemInfo] = field(default_factory=dict)
    synthetic: dict[str, Any] = field(default_factory=dict)  # rows of synthetic items: counted, and used or not


def load_vectors(
    ws: Workspace, store: Store, name: str | None = None, modalities: Sequence[str] = MODALITIES, vectors: bool = True,
    with_synthetic: bool = False,
) -> LoadedIndex:
    """The one reader of an index's rows and vectors: SQL says which rows are live, the vector files hold them.

    `name` None picks the default (or only) index. A modality without rows is left out of
    `modalities`. The folder's encoder must be the one SQL recorded. Synthetic items (generated
    images indexed by `mmgen index outputs`) are left out unless `with_synthetic`; `synthetic`
    counts the rows left out, or taken in.
    """
    name = pick_index_name(store, name)
    with store.session() as s:
        rec = s.scalar(select(IndexRecord).where(IndexRecord.name == name))
        if rec is None:
            raise VectorIndexError(f"index {name!r} disappeared from the store")
        rows = s.execute(
            select(IndexRow.modality, IndexRow.row_id, IndexRow.item_id, IndexRow.sha256,
                   Item.uri, Item.text, Item.group_key, Item.meta)
            .join(Item, Item.id == IndexRow.item_id)
            .where(IndexRow.index_id == rec.id, IndexRow.modality.in_(list(modalities)),
                   true() if with_synthetic else Item.synthetic.is_(False))
            .order_by(IndexRow.modality, IndexRow.item_id)
        ).all()  # fmt: skip
        synthetic = s.scalar(
            select(func.count()).select_from(IndexRow).join(Item, Item.id == IndexRow.item_id)
            .where(IndexRow.index_id == rec.id, IndexRow.modality.in_(list(modalities)), Item.synthetic.is_(True))
        ) or 0  # fmt: skip
        out = LoadedIndex(name, int(rec.id), rec.encoder, rec.encoder_checksum, int(rec.dim),
                          IndexFolder.open(ws.index_dir(name)))  # fmt: skip
        out.synthetic = {"rows": int(synthetic), "used": with_synthetic}
    if out.folder.manifest.get("encoder_checksum") != out.encoder_checksum:
        raise ManifestMismatchError(f"index {name!r}: its folder and the SQL store name different encoders")
    for modality in modalities:
        mine = [r for r in rows if r[0] == modality]
        if not mine:
            continue
        row_ids = np.fromiter((r[1] for r in mine), dtype=np.int64, count=len(mine))
        item_ids = np.fromiter((r[2] for r in mine), dtype=np.int64, count=len(mine))
        part = ModalityRows(row_ids, item_ids, [r[3] for r in mine])
        if vectors:
            part.vectors = out.folder.vectors(modality).get(row_ids)
        out.modalities[modality] = part
        for r in mine:
            out.items.setdefault(int(r[2]), ItemInfo(r[4], r[5], r[6], r[7] if isinstance(r[7], dict) else {}))
    return out
