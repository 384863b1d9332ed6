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
from mmgen.errors import DataError, VectorIndexError

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
    from mmgen.index.rows import load_vectors

    loaded = load_vectors(ws, store, index, ("image", "text") if with_text else ("image",))
    images = loaded.modalities.get("image")
    if images is None or not len(images):
        raise DataError(
            f"index {loaded.name!r} holds no images; index an image corpus first (mmgen index SOURCE --name {loaded.name})"
        )
    item_ids = images.item_ids
    text_part = loaded.modalities.get("text")
    text_of = dict(zip(text_part.item_ids.tolist(), range(len(text_part)))) if text_part is not None else {}
    has_text = np.asarray([int(i) in text_of for i in item_ids], dtype=bool)
    text_vectors = None
    if with_text and has_text.any() and text_part is not None and text_part.vectors is not None:
        text_vectors = np.zeros_like(images.vectors)
        text_vectors[has_text] = text_part.vectors[[text_of[int(i)] for i in item_ids[has_text]]]
    infos = [loaded.items[int(i)] for i in item_ids]
    return IndexedImages(
        index=loaded.name,
        encoder=loaded.encoder,
        encoder_checksum=loaded.encoder_checksum,
        item_ids=item_ids,
        uris=[info.uri or "" for info in infos],
        texts=[info.text for info in infos],
        groups=[info.group for info in infos],
        image_vectors=np.ascontiguousarray(images.vectors, dtype=np.float32),
        text_vectors=text_vectors,
        has_text=has_text,
        concepts=[concept_key(info.group, info.meta, int(i)) for info, i in zip(infos, item_ids)],
    )
