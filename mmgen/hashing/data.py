"""The float vectors of an index as a hasher sees them: live rows from SQL, vectors from the vector files,
and the seeded split by group that keeps evaluation queries out of hasher training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mmgen.data.concepts import concept_key
from mmgen.errors import ConfigError, VectorIndexError

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
    """The live rows of an index and their vectors (in RAM), grouped by concept (`mmgen.index.rows.load_vectors`)."""
    from mmgen.index.rows import load_vectors

    loaded = load_vectors(ws, store, index)
    out = IndexVectors(loaded.name, loaded.encoder, loaded.encoder_checksum, loaded.dim)
    for modality, part in loaded.modalities.items():
        groups = np.array(
            [concept_key(loaded.items[int(i)].group, loaded.items[int(i)].meta, int(i)) for i in part.item_ids],
            dtype=object,
        )
        out.modalities[modality] = ModalityVectors(part.row_ids, part.item_ids, groups, part.vectors)
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
