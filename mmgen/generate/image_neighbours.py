"""The indexed images a generator draws on: their vectors, items and groups, and exact nearest neighbours.

Vectors are read from the index's durable vector files through SQL `index_rows` (never by
implicit order). Neighbours are found by exact inner product in numpy, in chunks: training,
generation and evaluation then see the very same neighbours whatever FAISS preset the index uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mmgen.data.concepts import concept_key
from mmgen.errors import DataError, ManifestMismatchError, VectorIndexError

if TYPE_CHECKING:
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace



@dataclass
class IndexedImages:
    """The image items of one index (rows aligned) and, where indexed, their captions' vectors."""

    index: str
    encoder: str
    encoder_checksum: str
    item_ids: np.ndarray  # (n,) int64
    uris: list[str]
    texts: list[str | None]
    groups: list[str | None]
    image_vectors: np.ndarray  # (n, d) float32, L2-normalised
    text_vectors: np.ndarray | None  # (n, d) for items with both modalities (see `has_text`), else None
    has_text: np.ndarray  # (n,) bool

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.image_vectors.shape[1])

    concepts: list[str] = field(default_factory=list)  # `concept_key` of each item (skin tones folded)

    def group_codes(self) -> np.ndarray:
        """One integer per distinct concept (`mmgen.data.concepts`); an item without a group is its own."""
        codes: dict[str, int] = {}
        concepts = self.concepts or [
            concept_key(g, None, int(i)) for g, i in zip(self.groups, self.item_ids)
        ]
        out = np.empty(len(concepts), dtype=np.int64)
        for i, key in enumerate(concepts):
            out[i] = codes.setdefault(key, len(codes))
        return out


def require_index(store: Store) -> None:
    """VectorIndexError when the workspace has no index at all."""
    from sqlalchemy import func, select

    from mmgen.store.models import IndexRecord

    with store.session() as s:
        if not s.scalar(select(func.count(IndexRecord.id))):
            raise VectorIndexError("the workspace has no index yet; build one with `mmgen index SOURCE`")


def load_indexed_images(ws: Workspace, store: Store, index: str | None = None, with_text: bool = False) -> IndexedImages:
    """Image vectors (and caption vectors with `with_text`) of an index, joined to their items through SQL."""
    from sqlalchemy import select

    from mmgen.index import IndexFolder
    from mmgen.catalog import pick_index_name
    from mmgen.store.models import IndexRecord, IndexRow, Item

    name = pick_index_name(store, index)
    with store.session() as s:
        rec = s.scalars(select(IndexRecord).where(IndexRecord.name == name)).one()
        index_id, encoder, checksum = rec.id, rec.encoder, rec.encoder_checksum
        rows = s.execute(
            select(IndexRow.row_id, Item.id, Item.uri, Item.text, Item.group_key, Item.meta)
            .join(Item, Item.id == IndexRow.item_id)
            .where(IndexRow.index_id == index_id, IndexRow.modality == "image")
            .order_by(Item.id)
        ).all()
        text_rows = (
            dict(
                s.execute(
                    select(IndexRow.item_id, IndexRow.row_id).where(
                        IndexRow.index_id == index_id, IndexRow.modality == "text"
                    )
                ).all()
            )
            if with_text
            else {}
        )
    if not rows:
        raise DataError(
            f"index {name!r} holds no images; index an image corpus first (mmgen index SOURCE --name {name})"
        )
    folder = IndexFolder.open(ws.index_dir(name))
    if folder.manifest.get("encoder_checksum") != checksum:
        raise ManifestMismatchError(f"index {name!r}: its folder and the SQL store name different encoders")
    image_vectors = folder.vectors("image").get(np.asarray([r[0] for r in rows], dtype=np.int64))
    item_ids = np.asarray([r[1] for r in rows], dtype=np.int64)
    has_text = np.asarray([int(i) in text_rows for i in item_ids], dtype=bool)
    text_vectors = None
    if with_text and has_text.any():
        text_vectors = np.zeros_like(image_vectors)
        text_vectors[has_text] = folder.vectors("text").get(
            np.asarray([text_rows[int(i)] for i in item_ids[has_text]], dtype=np.int64)
        )
    return IndexedImages(
        index=name,
        encoder=encoder,
        encoder_checksum=checksum,
        item_ids=item_ids,
        uris=[r[2] or "" for r in rows],
        texts=[r[3] for r in rows],
        groups=[r[4] for r in rows],
        image_vectors=np.ascontiguousarray(image_vectors, dtype=np.float32),
        text_vectors=text_vectors,
        has_text=has_text,
        concepts=[concept_key(r[4], r[5], int(r[1])) for r in rows],
    )
