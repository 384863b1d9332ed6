"""The one interface of mmgen's vector indexes, float (`FaissIndex`) and binary (`BinaryIndex`).

Both hold items under int64 row ids and answer top-k queries; a float index scores by inner
product, a binary one by Hamming distance over packed codes. `VectorIndex` is what the index
folder, the searcher's modes and the tests rely on. `IndexVerbs` adds the verbs txtai's ANN
backends use (`build` for txtai's `index`, whose name is taken here by the wrapped FAISS object;
`append`, `upsert`, `delete`), written once over `add` and `remove`.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class VectorIndex(Protocol):
    """A trained-or-not FAISS index of rows (float vectors or packed codes) under int64 ids."""

    @property
    def count(self) -> int: ...

    @property
    def supports_remove(self) -> bool: ...

    @property
    def is_trained(self) -> bool: ...

    def ids(self) -> np.ndarray: ...

    def train(self, data: np.ndarray) -> None: ...

    def add(self, ids: np.ndarray, data: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> int: ...

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, Any]: ...

    def save(self, path: str | os.PathLike[str]) -> None: ...


class IndexVerbs:
    """txtai-style verbs over `add`, `remove`, `train` and `is_trained` (mixed into both index kinds)."""

    def build(self: Any, ids: np.ndarray, data: np.ndarray) -> None:
        """Build from scratch on these rows: train if the preset needs it, then add."""
        if not self.is_trained:
            self.train(data)
        self.add(ids, data)

    def append(self: Any, ids: np.ndarray, data: np.ndarray) -> None:
        """Add rows to a built index."""
        self.add(ids, data)

    def upsert(self: Any, ids: np.ndarray, data: np.ndarray) -> None:
        """Replace rows that exist under these ids, add the others."""
        ids = np.asarray(ids, dtype=np.int64)
        present = np.intersect1d(ids, self.ids())
        if len(present):
            self.remove(present)
        self.add(ids, data)

    def delete(self: Any, ids: np.ndarray) -> int:
        """Remove rows by id; returns how many were removed."""
        return int(self.remove(np.asarray(ids, dtype=np.int64)))
