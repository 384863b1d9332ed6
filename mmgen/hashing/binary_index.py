"""A FAISS binary index with explicit 64-bit ids, the binary twin of `FaissIndex`.

The id map is `IndexBinaryIDMap`, not `IDMap2`: ids are the vector-file slots SQL maps to items,
exactly as in the float index, but IDMap2's reverse hash map (id -> position) only serves
`reconstruct(id)`, which nothing here needs, and costs more than the codes: at 1M 64-bit codes,
IDMap2 measured 59 resident bytes per item, IDMap 16 (8 of code, 8 of id).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mmgen.errors import ManifestMismatchError, VectorIndexError
from mmgen.hashing.codes import check_bits, check_codes, choose_backend, hamming_knn
from mmgen.index.presets import Preset


def _faiss() -> Any:
    import faiss

    return faiss


class BinaryIndex:
    """Packed codes under ids: add, remove, Hamming k-NN (optionally restricted to some ids), save, load."""

    def __init__(self, bits: int, preset: Preset, index: Any | None = None) -> None:
        faiss = _faiss()
        self.bits = check_bits(bits)
        self.preset = preset
        if index is None:
            try:
                index = faiss.IndexBinaryIDMap(faiss.index_binary_factory(self.bits, preset.factory))
            except RuntimeError as exc:
                raise VectorIndexError(f"invalid FAISS binary factory string {preset.factory!r}: {_last_line(exc)}") from exc
            self._apply_build_params(index)
        if index.d != self.bits:
            raise ManifestMismatchError(
                f"the binary index holds {index.d}-bit codes, the hasher makes {self.bits}-bit codes; "
                "rebuild it with `mmgen index SOURCE --hash NAME`"
            )
        self.index = index
        self._gpu_index: Any | None = None

    # ---- persistence -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], bits: int, preset: Preset) -> BinaryIndex:
        """Read a binary index file; unreadable -> VectorIndexError, another code width -> ManifestMismatchError."""
        faiss = _faiss()
        try:
            index = faiss.read_index_binary(str(path))
        except RuntimeError as exc:
            raise VectorIndexError(f"cannot read FAISS binary index {path}: {_last_line(exc)}") from exc
        if not isinstance(index, faiss.IndexBinaryIDMap):  # IDMap2 derives from it: older files load too
            raise VectorIndexError(f"{path} is not an mmgen binary index (no id map)")
        return cls(bits, preset, index)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a killed save leaves the previous file intact."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        _faiss().write_index_binary(self.index, str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    # ---- contents ----------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Number of codes held."""
        return int(self.index.ntotal)

    @property
    def bytes_per_code(self) -> int:
        """Bytes of one code (bits / 8)."""
        return self.bits // 8

    def ids(self) -> np.ndarray:
        """All ids held, as int64."""
        return _faiss().vector_to_array(self.index.id_map).astype(np.int64)

    @property
    def is_flat(self) -> bool:
        """Whether the inner index is a plain array of codes (exact search, selectors, GPU)."""
        return isinstance(self._inner(), _faiss().IndexBinaryFlat)

    @property
    def supports_remove(self) -> bool:
        """Binary HNSW graphs cannot delete nodes; those indexes are rebuilt instead."""
        return not isinstance(self._inner(), _faiss().IndexBinaryHNSW)

    @property
    def is_trained(self) -> bool:
        """Whether the index is trained (IVF needs codes to train its coarse quantiser)."""
        return bool(self.index.is_trained)

    def train(self, codes: np.ndarray) -> None:
        """Train the coarse quantiser (IVF presets); refuses clearly when there are too few codes."""
        codes = check_codes(codes, self.bits)
        if len(codes) < self.preset.min_train:
            raise VectorIndexError(
                f"binary preset {self.preset.name!r} ({self.preset.factory}) needs at least {self.preset.min_train} "
                f"codes to train, the collection has {len(codes)}; use --hash-preset binary-flat"
            )
        try:
            self.index.train(codes)
        except RuntimeError as exc:
            raise VectorIndexError(f"training {self.preset.factory} on {len(codes)} codes failed: {_last_line(exc)}") from exc

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Add codes under the given ids (the index must be trained)."""
        codes = check_codes(codes, self.bits)
        if len(ids) != len(codes):
            raise VectorIndexError(f"{len(ids)} ids for {len(codes)} codes")
        if len(ids) == 0:
            return
        if not self.is_trained:
            raise VectorIndexError(f"{self.preset.factory} must be trained before codes are added")
        self.index.add_with_ids(codes, np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu_index = None

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids; returns how many were removed."""
        if len(ids) == 0:
            return 0
        if not self.supports_remove:
            raise VectorIndexError(f"{self.preset.factory} cannot remove codes; rebuild it instead")
        removed = int(self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))
        self._gpu_index = None
        return removed

    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, codes) of a flat index, without copying the index (for the torch / GPU search)."""
        if not self.is_flat:
            raise VectorIndexError(f"{self.preset.factory} does not keep its codes as one array")
        faiss = _faiss()
        raw = faiss.vector_to_array(self._inner().xb)
        return self.ids(), raw.reshape(-1, self.bytes_per_code)

    # ---- search ------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None, device: str = "cpu"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (Hamming distances int32, ids int64) per query code; missing results have id -1.

        `allowed_ids` restricts the search: exactly on the flat preset (a FAISS id selector);
        graph and IVF presets cannot take a selector, so they search 10x deeper and filter
        afterwards, which can return fewer than k hits.
        """
        queries = check_codes(queries, self.bits)
        k = max(1, int(k))
        empty = (np.full((len(queries), k), np.iinfo(np.int32).max, np.int32), np.full((len(queries), k), -1, np.int64))
        if self.count == 0:
            return empty
        if allowed_ids is not None:
            return self._filtered(queries, k, np.asarray(allowed_ids, dtype=np.int64))
        if self.is_flat and choose_backend(device) != "faiss-cpu":
            ids, codes = self.codes()
            dist, pos = hamming_knn(queries, codes, min(k, self.count), device=device)
            return _pad(dist, np.where(pos >= 0, ids[np.maximum(pos, 0)], -1), k)
        self._apply_search_params()
        dist, ids = self.index.search(queries, min(k, self.count))
        return _pad(dist.astype(np.int32), ids.astype(np.int64), k)

    def _filtered(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        if self.is_flat:
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed))
            params = faiss.SearchParameters()
            params.sel = sel
            dist, ids = self.index.search(queries, min(k, self.count), params=params)
            return _pad(dist.astype(np.int32), ids.astype(np.int64), k)
        self._apply_search_params()
        deep = min(self.count, 10 * k)
        dist, ids = self.index.search(queries, deep)
        keep = np.isin(ids, allowed) & (ids >= 0)
        out_d = np.full((len(queries), k), np.iinfo(np.int32).max, np.int32)
        out_i = np.full((len(queries), k), -1, np.int64)
        for row in range(len(queries)):
            sel_d, sel_i = dist[row][keep[row]][:k], ids[row][keep[row]][:k]
            out_d[row, : len(sel_d)], out_i[row, : len(sel_i)] = sel_d, sel_i
        return out_d, out_i

    def _inner(self) -> Any:
        return _faiss().downcast_IndexBinary(self.index.index)

    def _apply_search_params(self) -> None:
        faiss = _faiss()
        inner = self._inner()
        settings = self.preset.search
        if isinstance(inner, faiss.IndexBinaryHNSW):
            inner.hnsw.efSearch = int(settings.get("efSearch", 64))
        elif isinstance(inner, faiss.IndexBinaryIVF):
            inner.nprobe = int(settings.get("nprobe", 16))

    def _apply_build_params(self, index: Any) -> None:
        faiss = _faiss()
        inner = faiss.downcast_IndexBinary(index.index)
        ef = self.preset.build.get("efConstruction")
        if ef is not None and isinstance(inner, faiss.IndexBinaryHNSW):
            inner.hnsw.efConstruction = int(ef)


def _pad(dist: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Widen results to k columns (an index with fewer than k codes returns fewer)."""
    if dist.shape[1] >= k:
        return dist, ids
    n = len(dist)
    out_d = np.full((n, k), np.iinfo(np.int32).max, np.int32)
    out_i = np.full((n, k), -1, np.int64)
    out_d[:, : dist.shape[1]], out_i[:, : ids.shape[1]] = dist, ids
    return out_d, out_i


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
