"""The float vectors of an index as a hasher sees them: live rows from SQL, vectors from the vector files,
and the seeded split by group that keeps evaluation queries out of hasher training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from mmgen.data.concepts import concept_key
from mmgen.errors import ConfigError, VectorIndexError
from mmgen.index import MODALITIES, IndexFolder
from mmgen.store.models import IndexRecord, IndexRow, Item

if TYPE_CHECKING:
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace


@dataclass
class ModalityVectors:
    """One modality of an index: row ids, their items and groups, and the vectors (L2-normalised float32)."""

    rows: np.ndarray
    items: np.ndarray
    groups: np.ndarray  # object array of str: the item's concept (`concept_key`: skin tones folded), or "item:ID"
    vectors: np.ndarray

    def subset(self, mask: np.ndarray) -> ModalityVectors:
        """The rows where `mask` is true."""
        return ModalityVectors(self.rows[mask], self.items[mask], self.groups[mask], self.vectors[mask])

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class IndexVectors:
    """Every live vector of one index, per modality, with what the index was built with."""

    index: str
    encoder: str
    encoder_checksum: str
    dim: int
    modalities: dict[str, ModalityVectors] = field(default_factory=dict)

    def groups(self) -> np.ndarray:
        """Distinct groups across modalities, sorted."""
        found = [m.groups for m in self.modalities.values()]
        return np.unique(np.concatenate(found)) if found else np.array([], dtype=object)

    def split(self, heldout_groups: set[str]) -> tuple[IndexVectors, IndexVectors]:
        """(training part, held-out part): every item of a held-out group goes to the second."""
        train, held = IndexVectors(self.index, self.encoder, self.encoder_checksum, self.dim), IndexVectors(
            self.index, self.encoder, self.encoder_checksum, self.dim
        )
        for modality, mv in self.modalities.items():
            mask = np.isin(mv.groups, list(heldout_groups)) if heldout_groups else np.zeros(len(mv), bool)
            train.modalities[modality] = mv.subset(~mask)
            held.modalities[modality] = mv.subset(mask)
        return train, held


def load_index_vectors(ws: Workspace, store: Store, index: str) -> IndexVectors:
    """Read the live rows of an index from SQL and their vectors from the vector files (in RAM)."""
    with store.session() as s:
        rec = s.scalar(select(IndexRecord).where(IndexRecord.name == index))
        if rec is None:
            names = ", ".join(s.scalars(select(IndexRecord.name).order_by(IndexRecord.name))) or "none"
            raise VectorIndexError(f"no index named {index!r} (indexes here: {names})")
        out = IndexVectors(rec.name, rec.encoder, rec.encoder_checksum, int(rec.dim))
        rows = s.execute(
            select(IndexRow.modality, IndexRow.row_id, IndexRow.item_id, Item.group_key, Item.meta)
            .join(Item, Item.id == IndexRow.item_id)
            .where(IndexRow.index_id == rec.id)
            .order_by(IndexRow.modality, IndexRow.item_id)
        ).all()
    folder = IndexFolder.open(ws.index_dir(index))
    for modality in MODALITIES:
        mine = [r for r in rows if r[0] == modality]
        if not mine:
            continue
        row_ids = np.fromiter((r[1] for r in mine), dtype=np.int64, count=len(mine))
        item_ids = np.fromiter((r[2] for r in mine), dtype=np.int64, count=len(mine))
        groups = np.array([concept_key(r[3], r[4], int(r[2])) for r in mine], dtype=object)
        out.modalities[modality] = ModalityVectors(row_ids, item_ids, groups, folder.vectors(modality).get(row_ids))
    if not out.modalities:
        raise VectorIndexError(f"index {index!r} is empty; fill it with `mmgen index SOURCE --name {index}`")
    return out


def heldout_groups(groups: np.ndarray, fraction: float, seed: int) -> list[str]:
    """A seeded fraction of the distinct groups (the same groups for the same set, seed and fraction)."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"the held-out fraction must be in [0, 1), not {fraction}")
    distinct = np.unique(np.asarray(groups, dtype=object).astype(str))
    n = round(fraction * len(distinct))
    if fraction > 0 and n == 0 and len(distinct) > 1:
        n = 1
    if n >= len(distinct) and len(distinct):
        raise ConfigError(f"holding out {fraction:.0%} of {len(distinct)} groups leaves nothing to train on")
    order = np.random.default_rng(seed).permutation(len(distinct))
    return sorted(str(g) for g in distinct[order[:n]])
