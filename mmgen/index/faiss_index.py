"""A FAISS float index with explicit 64-bit ids (inner product on L2-normalised vectors)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mmgen.devices import faiss_threads_for
from mmgen.errors import VectorIndexError
from mmgen.index.base import IndexVerbs
from mmgen.index.presets import Preset


def _faiss() -> Any:
    import faiss

    return faiss


class FaissIndex(IndexVerbs):
    """`IDMap2` around a factory-built index: add, remove, search by id, save and load."""

    def __init__(self, dim: int, preset: Preset, index: Any | None = None, *, writable: bool = True) -> None:
        faiss = _faiss()
        self.dim = int(dim)
        self.preset = preset
        self.writable = writable  # False: an on-disk merge, memory-mapped read-only (see mmgen.index.shards)
        if index is None:
            try:
                index = faiss.index_factory(self.dim, f"IDMap2,{preset.factory}", faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as exc:
                raise VectorIndexError(f"invalid FAISS factory string {preset.factory!r}: {_last_line(exc)}") from exc
            self._apply_build_params(index)
        if index.d != self.dim:
            raise VectorIndexError(f"FAISS index has dimension {index.d}, expected {self.dim}")
        self.index = index
        self._gpu_index: Any | None = None
        self._plain = False  # True once this index is known to need no search parameters

    # ---- persistence -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], dim: int, preset: Preset) -> FaissIndex:
        """Read an index file; a truncated or corrupt file raises `VectorIndexError`."""
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise VectorIndexError(f"cannot read FAISS index {path}: {_last_line(exc)}") from exc
        if not isinstance(index, faiss.IndexIDMap2):
            index = faiss.downcast_index(index)
        if not isinstance(index, faiss.IndexIDMap2):
            raise VectorIndexError(f"{path} is not an mmgen index (no id map)")
        return cls(dim, preset, index)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a killed save leaves the previous file intact."""
        faiss = _faiss()
        from mmgen.durable import replacing

        # The previous file stays whole on any failure; a half-written one never lies about.
        with replacing(path, "the FAISS index") as tmp:
            faiss.write_index(self.index, str(tmp))

    # ---- contents ----------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Number of vectors held."""
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        """All ids held, as int64."""
        return _faiss().vector_to_array(self.index.id_map).astype(np.int64)

    @property
    def supports_remove(self) -> bool:
        """HNSW graphs cannot delete nodes; those indexes are rebuilt instead."""
        return "HNSW" not in self.preset.factory and "NSG" not in self.preset.factory

    @property
    def is_trained(self) -> bool:
        """Whether the index has been trained (always true for Flat and HNSW)."""
        return bool(self.index.is_trained)

    def train(self, vectors: np.ndarray) -> None:
        """Train quantisers; refuses with a clear message when there are too few vectors."""
        self._check_writable()
        n = len(vectors)
        if n < self.preset.min_train:
            raise VectorIndexError(
                f"index preset {self.preset.name!r} ({self.preset.factory}) needs at least "
                f"{self.preset.min_train} vectors to train, the collection has {n}; "
                "use --preset flat or hnsw32 for a collection this size"
            )
        try:
            self.index.train(np.ascontiguousarray(vectors, dtype=np.float32))
        except RuntimeError as exc:
            raise VectorIndexError(
                f"training {self.preset.factory} on {n} vectors failed: {_last_line(exc)}; "
                "use --preset flat for small collections"
            ) from exc

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under the given ids (the index must be trained)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise VectorIndexError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        if len(ids) != len(vectors):
            raise VectorIndexError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(ids) == 0:
            return
        self._check_writable()
        if not self.is_trained:
            raise VectorIndexError(f"{self.preset.factory} must be trained before vectors are added")
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu_index = None

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids; returns how many were removed."""
        if len(ids) == 0:
            return 0
        self._check_writable()
        if not self.supports_remove:
            raise VectorIndexError(f"{self.preset.factory} cannot remove vectors; rebuild it instead")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        ivf = _faiss().try_extract_index_ivf(self.index.index)
        before = self.ids() if ivf is not None else None
        removed = int(self.index.remove_ids(ids))
        if before is not None and removed:
            _renumber_ivf(ivf, np.isin(before, ids, invert=True))
        self._gpu_index = None
        return removed

    def _check_writable(self) -> None:
        if not self.writable:
            raise VectorIndexError("this index is an on-disk merge, read-only; change the shards and merge again")

    # ---- search ------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; missing results have id -1. `allowed_ids` restricts the search."""
        queries, k, empty = checked_queries(queries, k, self.dim, self.count)
        if empty is not None:
            return empty
        params = self._search_params(allowed_ids)
        with faiss_threads_for(len(queries)):
            if allowed_ids is None:
                index = self._gpu_or_cpu()
                scores, ids = index.search(queries, k) if params is None else index.search(queries, k, params=params)
            else:
                scores, ids = self.index.search(queries, k, params=params)
        return scores, ids

    def _search_params(self, allowed_ids: np.ndarray | None) -> Any | None:
        faiss = _faiss()
        settings = self.preset.search
        if allowed_ids is None and self._plain:
            return None  # a flat index searched whole: nothing to set (the common query, checked once)
        sel = None
        if allowed_ids is not None:
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
        inner = faiss.downcast_index(self.index.index)
        if sel is None and not isinstance(inner, faiss.IndexHNSW) and faiss.try_extract_index_ivf(inner) is None:
            self._plain = True  # `self.index` is set once, so its kind never changes
        if isinstance(inner, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW()
            params.efSearch = int(settings.get("efSearch", 64))
        elif faiss.try_extract_index_ivf(inner) is not None:
            params = faiss.SearchParametersIVF()
            params.nprobe = int(settings.get("nprobe", 16))
        elif sel is None:
            return None
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
            params._sel_ref = sel  # keep the selector alive as long as the params object
        return params

    def _gpu_or_cpu(self) -> Any:
        from mmgen.devices import faiss_gpu_count

        if self._gpu_index is None and faiss_gpu_count() > 0 and "HNSW" not in self.preset.factory:
            faiss = _faiss()
            try:
                self._gpu_index = faiss.index_cpu_to_all_gpus(self.gpu_source())
            except RuntimeError:  # an index type without a GPU implementation: search on CPU
                self._gpu_index = self.index
        return self._gpu_index if self._gpu_index is not None else self.index

    def gpu_source(self) -> Any:
        """The index a GPU copy is made from: this one, except a flat scalar-quantised index (`flat-fp16`),
        which FAISS cannot put on a GPU: its decoded vectors in a float `IDMap2,Flat`, which scores each row
        as the CPU scan does (q . x rounded), so a certified re-rank holds on either device."""
        faiss = _faiss()
        inner = faiss.downcast_index(self.index.index)
        if not isinstance(inner, faiss.IndexScalarQuantizer) or self.index.ntotal == 0:
            return self.index
        flat = faiss.index_factory(self.dim, "IDMap2,Flat", inner.metric_type)
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        flat.add_with_ids(inner.reconstruct_n(0, inner.ntotal), ids)
        return flat

    def _apply_build_params(self, index: Any) -> None:
        faiss = _faiss()
        inner = faiss.downcast_index(index.index)
        ef = self.preset.build.get("efConstruction")
        if ef is not None and isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efConstruction = int(ef)


def _renumber_ivf(ivf: Any, kept: np.ndarray) -> None:
    """Renumber an IVF's internal ids after `IDMap2.remove_ids`, which compacts the id map but not the lists.

    `kept[i]`: whether internal id i (before the removal) survived; survivor i becomes `cumsum(kept)[i] - 1`,
    its slot in the compacted id map. Without this every id past a removed one maps to the wrong row.
    """
    faiss = _faiss()
    new_pos = np.cumsum(kept, dtype=np.int64) - 1
    lists = ivf.invlists
    for list_no in range(ivf.nlist):
        n = lists.list_size(list_no)
        if n == 0:
            continue
        old = faiss.rev_swig_ptr(lists.get_ids(list_no), n)
        new = np.ascontiguousarray(new_pos[old])
        codes = faiss.rev_swig_ptr(lists.get_codes(list_no), n * lists.code_size).copy()
        lists.update_entries(list_no, 0, n, faiss.swig_ptr(new), faiss.swig_ptr(codes))


def checked_queries(
    queries: np.ndarray, k: int, dim: int, count: int
) -> tuple[np.ndarray, int, tuple[np.ndarray, np.ndarray] | None]:
    """(float32 queries, k clipped to the index size, the all-missing answer of an empty index or None)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise VectorIndexError(f"query has shape {queries.shape}, the index holds {dim}-d vectors")
    k = max(1, min(int(k), max(1, count)))
    if count == 0:
        return queries, k, (np.zeros((len(queries), k), np.float32), np.full((len(queries), k), -1, np.int64))
    return queries, k, None


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
