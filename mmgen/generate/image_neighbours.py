"""The indexed images a generator draws on: their vectors, items and groups, and exact nearest neighbours.

Vectors are read from the index's durable vector files through SQL `index_rows` (never by
implicit order). Neighbours are found by exact inner product in numpy, in chunks: training,
generation and evaluation then see the very same neighbours whatever FAISS preset the index uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mmgen.errors import DataError, ManifestMismatchError, VectorIndexError

if TYPE_CHECKING:
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace

CHUNK = 1024


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

    def group_codes(self) -> np.ndarray:
        """One integer per distinct group; an item without a group is a group of its own."""
        codes: dict[str, int] = {}
        out = np.empty(len(self.groups), dtype=np.int64)
        for i, g in enumerate(self.groups):
            key = g if g is not None else f"\0item:{int(self.item_ids[i])}"
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
    from mmgen.search import pick_index_name
    from mmgen.store.models import IndexRecord, IndexRow, Item

    name = pick_index_name(store, index)
    with store.session() as s:
        rec = s.scalars(select(IndexRecord).where(IndexRecord.name == name)).one()
        index_id, encoder, checksum = rec.id, rec.encoder, rec.encoder_checksum
        rows = s.execute(
            select(IndexRow.row_id, Item.id, Item.uri, Item.text, Item.group_key)
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
    )


def nearest(
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
    query_groups: np.ndarray | None = None,
    candidate_groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product: (indices, scores), each (m, k), best first.

    With groups, a candidate of the query's own group is never returned (training neighbours
    exclude the other styles of the same concept, so the model learns to use neighbours, not copy).
    """
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise VectorIndexError(f"queries {queries.shape} and candidates {candidates.shape} do not match")
    if (query_groups is None) != (candidate_groups is None):
        raise VectorIndexError("give groups for both queries and candidates, or for neither")
    if k < 1 or k > len(candidates):
        raise VectorIndexError(f"k must be in 1..{len(candidates)} (the candidates), not {k}")
    out_idx = np.empty((len(queries), k), dtype=np.int64)
    out_scores = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), CHUNK):
        scores = queries[start : start + CHUNK] @ candidates.T
        if query_groups is not None and candidate_groups is not None:
            scores[query_groups[start : start + CHUNK, None] == candidate_groups[None, :]] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        # Sort by score, ties by index, so results do not depend on argpartition's order.
        order = np.lexsort((part, -part_scores), axis=1)
        out_idx[start : start + CHUNK] = np.take_along_axis(part, order, axis=1)
        out_scores[start : start + CHUNK] = np.take_along_axis(part_scores, order, axis=1)
    if not np.isfinite(out_scores).all():
        raise DataError(f"fewer than {k} candidates outside a query's own group; lower k")
    return out_idx, out_scores
