"""A FAISS binary index addressed by row id, the binary twin of `FaissIndex`.

Ids are the vector-file slots SQL maps to items, exactly as in the float index.

- **Flat preset (`BFlat`, the default)**: a bare `IndexBinaryFlat` whose position *is* the slot,
  so RAM holds B/8 bytes per item and no id at all. Slots that hold no item (removed, or never
  added) keep a zero code and are listed in a sidecar file `<file>.dead.npy`; searches exclude
  them with a FAISS id selector. Measured at 1M 64-bit codes this is 8 resident bytes per item;
  an `IndexBinaryIDMap` costs 16 (8 of code, 8 of id) and `IDMap2` 59.
- **Graph and IVF presets**: an `IndexBinaryIDMap` around the factory index (their positions move
  as they grow, so they need the explicit ids).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mmgen.devices import faiss_threads_for
from mmgen.durable import replacing
from mmgen.errors import ManifestMismatchError, VectorIndexError
from mmgen.index.base import IndexVerbs
from mmgen.index.codes import check_bits, check_codes, choose_backend, hamming_knn
from mmgen.index.presets import Preset


def _faiss() -> Any:
    import faiss

    return faiss


class BinaryIndex(IndexVerbs):
    """Packed codes under ids: add, remove, Hamming k-NN (optionally restricted to some ids), save, load."""

    def __init__(self, bits: int, preset: Preset, index: Any | None = None) -> None:
        faiss = _faiss()
        self.bits = check_bits(bits)
        self.preset = preset
        if index is None:
            try:
                index = faiss.index_binary_factory(self.bits, preset.factory)
            except RuntimeError as exc:
                raise VectorIndexError(f"invalid FAISS binary factory string {preset.factory!r}: {_last_line(exc)}") from exc
            if not isinstance(index, faiss.IndexBinaryFlat):
                index = faiss.IndexBinaryIDMap(index)
                self._apply_build_params(index)
        if index.d != self.bits:
            raise ManifestMismatchError(
                f"the binary index holds {index.d}-bit codes, the hasher makes {self.bits}-bit codes; "
                "rebuild it with `mmgen index SOURCE --hash NAME`"
            )
        self.index = index
        # flat: position == row id; sorted positions holding no item (zero codes, never returned)
        self.slotted = isinstance(index, faiss.IndexBinaryFlat)
        self._dead = np.empty(0, dtype=np.int64)

    # ---- persistence -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], bits: int, preset: Preset) -> BinaryIndex:
        """Read a binary index file; unreadable -> VectorIndexError, another code width -> ManifestMismatchError."""
        faiss = _faiss()
        try:
            index = faiss.read_index_binary(str(path))
        except RuntimeError as exc:
            raise VectorIndexError(f"cannot read FAISS binary index {path}: {_last_line(exc)}") from exc
        # IDMap2 derives from IDMap: older files load too; a bare flat index is addressed by position
        if not isinstance(index, (faiss.IndexBinaryIDMap, faiss.IndexBinaryFlat)):
            raise VectorIndexError(f"{path} is not an mmgen binary index (neither an id map nor flat codes)")
        out = cls(bits, preset, index)
        if out.slotted:
            out._dead = _read_dead(dead_path(path), int(index.ntotal))
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a killed save leaves the previous files intact.

        The flat preset's dead-slot list is written first; should a crash fall between the two
        renames, the index folder's row state no longer matches and the next search re-syncs.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        dead = dead_path(path)
        if self.slotted and len(self._dead):
            with replacing(dead, "the binary codes' free slots") as tmp_dead, open(tmp_dead, "wb") as fh:
                np.save(fh, self._dead)
        else:
            dead.unlink(missing_ok=True)
        with replacing(path, "the binary codes") as tmp:
            _faiss().write_index_binary(self.index, str(tmp))

    @staticmethod
    def delete_files(path: str | os.PathLike[str]) -> None:
        """Remove a saved index and its sidecar (missing files are fine)."""
        Path(path).unlink(missing_ok=True)
        dead_path(path).unlink(missing_ok=True)

    # ---- contents ----------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Number of codes held (live items)."""
        return int(self.index.ntotal) - len(self._dead)

    @property
    def bytes_per_code(self) -> int:
        """Bytes of one code (bits / 8)."""
        return self.bits // 8

    def ids(self) -> np.ndarray:
        """All ids held, as int64 (ascending on the flat preset)."""
        if self.slotted:
            return np.setdiff1d(np.arange(self.index.ntotal, dtype=np.int64), self._dead, assume_unique=True)
        return _faiss().vector_to_array(self.index.id_map).astype(np.int64)

    @property
    def resident_bytes_per_item(self) -> float:
        """Bytes the loaded index holds per live item: codes, plus ids (id map) or dead slots (flat)."""
        if self.count == 0:
            return 0.0
        if self.slotted:
            return (self.index.ntotal * self.bytes_per_code + 8 * len(self._dead)) / self.count
        return float(self.bytes_per_code + 8)

    @property
    def is_flat(self) -> bool:
        """Whether the inner index is a plain array of codes (exact search, selectors, GPU)."""
        return self.slotted or isinstance(self._inner(), _faiss().IndexBinaryFlat)

    @property
    def supports_remove(self) -> bool:
        """Binary HNSW graphs cannot delete nodes; those indexes are rebuilt instead."""
        return self.slotted or not isinstance(self._inner(), _faiss().IndexBinaryHNSW)

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
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.slotted:
            self._add_slots(ids, codes)
        else:
            self.index.add_with_ids(codes, ids)

    def _add_slots(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Flat preset: write each code at the position of its id; gaps become dead slots."""
        n0 = int(self.index.ntotal)
        if (ids < 0).any() or len(np.unique(ids)) != len(ids):
            raise VectorIndexError("row ids must be unique and non-negative")
        reused = ids[ids < n0]
        if len(np.setdiff1d(reused, self._dead, assume_unique=True)):
            raise VectorIndexError(f"row ids already hold codes: {np.setdiff1d(reused, self._dead)[:5].tolist()}")
        top = max(n0, int(ids.max()) + 1)
        if len(reused):  # refill dead slots: rewrite the array (rare: row ids are not reused by the indexer)
            table = np.zeros((top, self.bytes_per_code), dtype=np.uint8)
            table[:n0] = _faiss().vector_to_array(self.index.xb).reshape(n0, self.bytes_per_code)
            table[ids] = codes
            self.index.reset()
            self.index.add(table)
        else:
            block = np.zeros((top - n0, self.bytes_per_code), dtype=np.uint8)
            block[ids - n0] = codes
            self.index.add(block)
        gap = np.setdiff1d(np.arange(n0, top, dtype=np.int64), ids)
        self._dead = np.setdiff1d(np.union1d(self._dead, gap), ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids; returns how many were removed."""
        if len(ids) == 0:
            return 0
        if not self.supports_remove:
            raise VectorIndexError(f"{self.preset.factory} cannot remove codes; rebuild it instead")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not self.slotted:
            return int(self.index.remove_ids(ids))
        held = np.setdiff1d(ids[(ids >= 0) & (ids < self.index.ntotal)], self._dead)
        self._dead = np.union1d(self._dead, held)
        if len(self._dead) == self.index.ntotal:  # nothing left: drop the zero codes too
            self.index.reset()
            self._dead = np.empty(0, dtype=np.int64)
        return len(held)

    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, codes) of a flat index, without copying the index (for the torch / GPU search)."""
        if not self.is_flat:
            raise VectorIndexError(f"{self.preset.factory} does not keep its codes as one array")
        faiss = _faiss()
        inner = self._inner()
        raw = faiss.vector_to_array(inner.xb).reshape(-1, self.bytes_per_code)
        if self.slotted and len(self._dead):
            live = self.ids()
            return live, raw[live]
        return self.ids(), raw

    def slot_codes(self) -> np.ndarray:
        """Flat preset: a read-only view (no copy) of the codes by row id, dead slots zero."""
        if not self.slotted:
            raise VectorIndexError(f"{self.preset.factory} codes are not addressed by row id")
        n = int(self.index.ntotal)
        if n == 0:
            return np.zeros((0, self.bytes_per_code), dtype=np.uint8)
        view = _faiss().rev_swig_ptr(self.index.xb.data(), n * self.bytes_per_code).reshape(n, self.bytes_per_code)
        view.flags.writeable = False
        return view

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
        if self.slotted and len(self._dead) and choose_backend(device) == "faiss-cpu":
            live = faiss_selector_not(self._dead)
            return self._search_with(queries, k, live)
        if self.is_flat and choose_backend(device) != "faiss-cpu":
            ids, codes = self.codes()
            dist, pos = hamming_knn(queries, codes, min(k, self.count), device=device)
            return _pad(dist, np.where(pos >= 0, ids[np.maximum(pos, 0)], -1), k)
        self._apply_search_params()
        with faiss_threads_for(len(queries)):
            dist, ids = self.index.search(queries, min(k, self.count))
        return _pad(dist.astype(np.int32), ids.astype(np.int64), k)

    def _filtered(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        if self.is_flat:
            if self.slotted:
                allowed = np.setdiff1d(allowed, self._dead)
            return self._search_with(queries, k, faiss.IDSelectorBatch(np.ascontiguousarray(allowed)))
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

    def _search_with(self, queries: np.ndarray, k: int, selector: Any) -> tuple[np.ndarray, np.ndarray]:
        params = _faiss().SearchParameters()
        params.sel = selector
        dist, ids = self.index.search(queries, min(k, self.count), params=params)
        ids = np.where(dist >= 0, ids, -1)  # fewer selected codes than k: FAISS pads with -1 ids
        return _pad(dist.astype(np.int32), ids.astype(np.int64), k)

    def _inner(self) -> Any:
        if self.slotted:
            return self.index
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


def dead_path(path: str | os.PathLike[str]) -> Path:
    """The flat preset's sidecar listing slots that hold no item."""
    path = Path(path)
    return path.with_name(path.name + ".dead.npy")


def _read_dead(path: Path, ntotal: int) -> np.ndarray:
    """Dead slots from a sidecar (none when absent); a bad file is a VectorIndexError (the cache is rebuilt)."""
    if not path.exists():
        return np.empty(0, dtype=np.int64)
    try:
        dead = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise VectorIndexError(f"cannot read dead-slot list {path}: {exc}") from exc
    if dead.ndim != 1 or dead.dtype != np.int64 or (len(dead) and (dead.min() < 0 or dead.max() >= ntotal)):
        raise VectorIndexError(f"{path} does not fit its index of {ntotal} slots")
    return np.unique(dead)


def faiss_selector_not(ids: np.ndarray) -> Any:
    """A FAISS selector of every id except `ids` (the selector keeps the batch it wraps alive)."""
    faiss = _faiss()
    inner = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
    sel = faiss.IDSelectorNot(inner)
    sel.referenced = inner  # type: ignore[attr-defined]  # the SWIG wrapper does not own `inner`
    return sel


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
