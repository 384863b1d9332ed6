"""Sharded FAISS float indexes: N `FaissIndex` shards over the rows `row_id % N`, searched as one.

Rows go to shard `row_id % N`: row ids are vector-file slots that only ever grow, so a modulo keeps
the shards balanced as rows append and a row never changes shard (contiguous ranges would pile every
new row into the last shard, and a range boundary would have to be stored and kept). A search asks
every shard for its top k and merges them best first, ties by lower row id, as one index built in
row order ranks them; for exact presets (Flat) the result is that index's, id for id.

A preset that trains (IVF, PQ, SQ, ...) is trained once, on the same sample one index would use;
every shard starts as a copy of that trained empty index. So scores are comparable across shards,
and IVF shards share one coarse quantizer: what lets `merge_ondisk` join their inverted lists into
one index whose lists stay on disk, memory-mapped, and which answers as the shards do for the same
nprobe. A shard lost or unreadable restarts as an empty copy of a sibling (read memory-mapped, so
without loading its lists) and is refilled from the vector file by the folder's sync.

Files beside the vector file, for `image` and N = 4: `image.shard-0-of-4.faiss` ... (N = 1 is the
plain `image.faiss`), and after a merge `image.merged-G.faiss` + `image.merged-G.ivfdata`, G a
generation counter, so a reader holding one generation never sees its lists replaced.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np

from mmgen.errors import VectorIndexError
from mmgen.index.base import IndexVerbs
from mmgen.index.faiss_index import FaissIndex, _faiss, _last_line, checked_queries
from mmgen.index.presets import Preset

MAX_SHARDS = 1024
# FAISS reports "no result" with this score on inner-product indexes; merged results keep it.
NO_SCORE = -float(np.finfo(np.float32).max)


AUTO_SHARD_ROWS = 5_000_000  # live rows per shard file past which `mmgen index` adds shards (7.3 GiB of 384-d Flat)
SHARD_ROWS_ENV = "MMGEN_SHARD_ROWS"


def shard_rows_limit(value: int | None = None) -> int:
    """Rows per shard before `mmgen index` splits further: `value`, else $MMGEN_SHARD_ROWS, else AUTO_SHARD_ROWS.

    0 turns automatic sharding off. VectorIndexError for a negative or malformed value.
    """
    raw: Any = value if value is not None else os.environ.get(SHARD_ROWS_ENV, AUTO_SHARD_ROWS)
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        limit = -1
    if limit < 0:
        raise VectorIndexError(f"rows per shard ({SHARD_ROWS_ENV}) is a whole number >= 0 (0: never add shards), "
                               f"not {raw!r}")  # fmt: skip
    return limit


def auto_shard_count(rows: int, current: int, limit: int) -> int:
    """The shard count an index of `rows` live rows grows to: ceil(rows / limit), never fewer than `current`."""
    if limit <= 0:
        return current
    return max(current, min(MAX_SHARDS, -(-rows // limit)))


def shard_path(path: Path, shard: int, shards: int) -> Path:
    """The file of one shard: `image.faiss` -> `image.shard-1-of-4.faiss` (unchanged when `shards` is 1)."""
    if shards == 1:
        return path
    return path.with_name(f"{path.stem}.shard-{shard}-of-{shards}{path.suffix}")


def check_shards(shards: int) -> int:
    """A valid shard count, or VectorIndexError."""
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or not 1 <= shards <= MAX_SHARDS:
        raise VectorIndexError(f"an index holds 1 to {MAX_SHARDS} shards, not {shards!r}")
    return int(shards)


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k of per-shard (scores, ids) top lists, best first, ties by lower id; -1 pads missing results."""
    if not parts:
        return np.full((n_queries, k), NO_SCORE, np.float32), np.full((n_queries, k), -1, np.int64)
    scores = np.concatenate([p[0] for p in parts], axis=1).astype(np.float32, copy=False)
    ids = np.concatenate([p[1] for p in parts], axis=1).astype(np.int64, copy=False)
    key = np.where(ids < 0, -np.inf, scores)
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -key), axis=1)[:, :k]
    best_ids = np.take_along_axis(ids, order, axis=1)
    best = np.where(best_ids < 0, NO_SCORE, np.take_along_axis(scores, order, axis=1)).astype(np.float32)
    if best_ids.shape[1] < k:  # every shard held fewer than k (allowed) rows
        pad = k - best_ids.shape[1]
        best = np.pad(best, ((0, 0), (0, pad)), constant_values=NO_SCORE)
        best_ids = np.pad(best_ids, ((0, 0), (0, pad)), constant_values=-1)
    return best, best_ids


class ShardedIndex(IndexVerbs):
    """N `FaissIndex` shards holding the rows `id % N`, with the `VectorIndex` interface of one."""

    def __init__(self, dim: int, preset: Preset, shards: list[FaissIndex]) -> None:
        self.dim = int(dim)
        self.preset = preset
        self.shards = shards
        self._dirty = set(range(len(shards)))  # shards changed since they were loaded or saved
        self._saved_to: Path | None = None

    @classmethod
    def create(cls, dim: int, preset: Preset, shards: int) -> ShardedIndex:
        """N new empty shards (untrained when the preset trains)."""
        return cls(dim, preset, [FaissIndex(dim, preset) for _ in range(check_shards(shards))])

    @classmethod
    def load(cls, path: Path, dim: int, preset: Preset, shards: int) -> tuple[ShardedIndex, str]:
        """The shards saved under `path` (see `shard_path`), and a note of those that had to restart.

        A missing or unreadable shard restarts empty, trained like its siblings; when no shard loads,
        or the shards were trained apart (a save killed halfway through a retrain), all restart
        untrained and the folder's sync retrains and refills them.
        """
        n = check_shards(shards)
        loaded: dict[int, FaissIndex] = {}
        notes = []
        for s in range(n):
            file = shard_path(path, s, n)
            if not file.exists():
                notes.append(f"shard {s} missing")
                continue
            try:
                loaded[s] = FaissIndex.load(file, dim, preset)
            except VectorIndexError as exc:
                notes.append(f"shard {s}: {exc}")
        if len({train_key(index.index) for index in loaded.values()}) > 1:
            notes.append("shards trained apart")
            loaded = {}
        restarted = set(range(n)) - set(loaded)
        trains = not FaissIndex(dim, preset).is_trained
        sibling = shard_path(path, min(loaded), n) if loaded and trains else None
        for s in restarted:
            loaded[s] = empty_copy(sibling, dim, preset) if sibling is not None else FaissIndex(dim, preset)
        index = cls(dim, preset, [loaded[s] for s in range(n)])
        index._dirty = restarted
        index._saved_to = path
        return index, ("rebuilt: " + "; ".join(notes)) if notes else ""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the shards changed since the last load or save (each atomically)."""
        path = Path(path)
        n = len(self.shards)
        for s, shard in enumerate(self.shards):
            if path != self._saved_to or s in self._dirty or not shard_path(path, s, n).exists():
                shard.save(shard_path(path, s, n))
        self._dirty.clear()
        self._saved_to = path

    # ---- contents ----------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Number of vectors held, all shards together."""
        return sum(shard.count for shard in self.shards)

    def ids(self) -> np.ndarray:
        """All ids held, as int64 (shard by shard)."""
        return np.concatenate([shard.ids() for shard in self.shards]) if self.shards else np.zeros(0, np.int64)

    @property
    def supports_remove(self) -> bool:
        """As one shard (the preset decides)."""
        return self.shards[0].supports_remove

    @property
    def is_trained(self) -> bool:
        """Whether every shard is trained."""
        return all(shard.is_trained for shard in self.shards)

    def train(self, vectors: np.ndarray) -> None:
        """Train once on `vectors`; every shard becomes a copy of the trained empty index."""
        if self.count:
            raise VectorIndexError("train a sharded index before adding vectors to it")
        faiss = _faiss()
        first = FaissIndex(self.dim, self.preset)
        first.train(vectors)
        blob = faiss.serialize_index(first.index)
        self.shards = [first] + [
            FaissIndex(self.dim, self.preset, faiss.deserialize_index(blob)) for _ in range(len(self.shards) - 1)
        ]
        self._dirty = set(range(len(self.shards)))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add each vector to the shard of its id."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(ids) != len(vectors):
            raise VectorIndexError(f"{len(ids)} ids for {len(vectors)} vectors")
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise VectorIndexError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        where = ids % len(self.shards)
        for s, shard in enumerate(self.shards):
            mine = where == s
            if mine.any():
                shard.add(ids[mine], vectors[mine])
                self._dirty.add(s)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids from their shards; returns how many were removed."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        if not self.supports_remove:
            raise VectorIndexError(f"{self.preset.factory} cannot remove vectors; rebuild it instead")
        where = ids % len(self.shards)
        removed = 0
        for s, shard in enumerate(self.shards):
            mine = ids[where == s]
            if len(mine):
                removed += shard.remove(mine)
                self._dirty.add(s)
        return removed

    # ---- search ------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query over all shards, as `FaissIndex.search`; `allowed_ids` filters each shard."""
        queries, k, empty = checked_queries(queries, k, self.dim, self.count)
        if empty is not None:
            return empty
        allowed = None if allowed_ids is None else np.asarray(allowed_ids, dtype=np.int64)
        parts = []
        for s, shard in enumerate(self.shards):
            mine = None if allowed is None else allowed[allowed % len(self.shards) == s]
            if shard.count == 0 or (mine is not None and len(mine) == 0):
                continue
            parts.append(shard.search(queries, k, allowed_ids=mine))
        return merge_topk(parts, k, len(queries))


# The float index of one modality: one FAISS file, or shards of it.
FloatIndex = Union[FaissIndex, ShardedIndex]


def is_ivf(preset: Preset, dim: int) -> bool:
    """Whether the preset builds an IVF index (inverted lists: what an on-disk merge joins)."""
    probe = FaissIndex(dim, preset).index  # held: the inner index dies with its IDMap2 wrapper
    return _faiss().try_extract_index_ivf(probe.index) is not None


def train_key(index: Any) -> bytes | None:
    """The coarse centroids of a FAISS IVF index, as bytes (None for others): equal for shards trained together."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or not ivf.is_trained:
        return None
    try:
        return np.ascontiguousarray(ivf.quantizer.reconstruct_n(0, ivf.quantizer.ntotal)).tobytes()
    except RuntimeError:  # a quantizer that cannot reconstruct: nothing to compare
        return None


def empty_copy(path: Path, dim: int, preset: Preset) -> FaissIndex:
    """An empty index trained as the one saved at `path`; an IVF's lists are memory-mapped, never loaded."""
    faiss = _faiss()
    ivf_preset = is_ivf(preset, dim)
    if ivf_preset:
        index = _read_mapped(path)
    else:
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise VectorIndexError(f"cannot read FAISS index {path}: {_last_line(exc)}") from exc
    if ivf_preset:
        ivf = faiss.extract_index_ivf(index)
        lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # owned by the index now
    index.reset()
    return FaissIndex(dim, preset, index)


def merge_ondisk(shard_files: list[Path], out: Path, ivfdata: Path, dim: int, preset: Preset) -> tuple[int, int]:
    """Join the inverted lists of IVF shard files into `out`, its lists in `ivfdata`; returns (count, max id).

    `faiss.contrib.ondisk.merge_ondisk` reads the shards memory-mapped and writes the lists once. The
    merged index's id map (an `IndexIDMap`: no reverse map to hold in memory) is the shards' id maps in
    shard order, so a shard's internal ids are shifted by the rows of the shards before it. Not with
    `shift_ids=True`: FAISS (1.15) adds each shard's own size to the offset instead of the previous
    one's, so shards of unequal size collide; the lists hold the shards' entries in shard order, and
    `_shift_ids` shifts them after the merge.
    """
    from faiss.contrib.ondisk import merge_ondisk as faiss_merge_ondisk

    faiss = _faiss()
    if not is_ivf(preset, dim):
        raise VectorIndexError(f"an on-disk merge joins inverted lists: it needs an IVF preset, not {preset.factory}")
    keys, id_maps, sizes = set(), [], []
    for file in shard_files:
        mapped = _read_mapped(file)  # the id map, the centroids and the list sizes; the lists stay on disk
        keys.add(train_key(mapped))
        id_maps.append(faiss.vector_to_array(mapped.id_map).astype(np.int64))
        lists = faiss.extract_index_ivf(mapped).invlists
        sizes.append([lists.list_size(j) for j in range(lists.nlist)])
        del lists, mapped
    if len(keys) > 1:
        raise VectorIndexError("the shards were trained apart; catch the index up (`mmgen index`) and merge again")
    template = empty_copy(shard_files[0], dim, preset).index
    inner = template.index
    template.own_fields = False  # `inner` outlives its IDMap2 wrapper, owned by `merged`
    merged = faiss.IndexIDMap(inner)
    merged.own_fields = True
    try:
        faiss_merge_ondisk(merged, [str(f) for f in shard_files], str(ivfdata), shift_ids=False)
        _shift_ids(faiss.extract_index_ivf(merged).invlists, np.array(sizes, dtype=np.int64).reshape(len(sizes), -1))
    except RuntimeError as exc:
        raise VectorIndexError(f"merging {len(shard_files)} shards on disk failed: {_last_line(exc)}") from exc
    ids = np.concatenate(id_maps) if id_maps else np.zeros(0, np.int64)
    faiss.copy_array_to_vector(ids, merged.id_map)
    faiss.write_index(merged, str(out))
    for file in (ivfdata, out):
        with open(file, "rb+") as fh:
            os.fsync(fh.fileno())
    return len(ids), int(ids.max()) if len(ids) else -1


def load_merged(out: Path, ivfdata: Path, dim: int, preset: Preset) -> FaissIndex:
    """A merged index, read-only, its inverted lists memory-mapped from `ivfdata`.

    Not `IO_FLAG_MMAP`: FAISS maps on-disk lists itself, and that flag makes it skip them (a crash on
    search). The lists' file is the one recorded at merge time, or, when the folder moved since, the
    one beside `out` (`IO_FLAG_ONDISK_SAME_DIR`, which FAISS announces on stdout: only then).
    """
    faiss = _faiss()
    try:
        index = faiss.read_index(str(out), faiss.IO_FLAG_READ_ONLY)
        if _ondisk_file(index) != str(ivfdata):
            raise RuntimeError("moved")
    except RuntimeError:
        try:
            index = faiss.read_index(str(out), faiss.IO_FLAG_READ_ONLY | faiss.IO_FLAG_ONDISK_SAME_DIR)
        except RuntimeError as exc:
            raise VectorIndexError(f"cannot read the on-disk index {out}: {_last_line(exc)}") from exc
    if not isinstance(index, faiss.IndexIDMap):
        raise VectorIndexError(f"{out} is not an mmgen on-disk index (no id map)")
    return FaissIndex(dim, preset, index, writable=False)


def _shift_ids(lists: Any, sizes: np.ndarray) -> None:
    """Shift the internal ids of merged lists: shard s's entries (`sizes[s, j]` in list j, after those of the
    shards before it) by the rows of shards 0..s-1, so they index the concatenated id map."""
    faiss = _faiss()
    offsets = np.concatenate([[0], np.cumsum(sizes.sum(axis=1))[:-1]]).astype(np.int64)
    code_size = lists.code_size
    for j in range(sizes.shape[1]):
        start, total = int(sizes[0, j]), int(sizes[:, j].sum())
        if total == start:
            continue
        n = total - start
        ids = faiss.rev_swig_ptr(lists.get_ids(j), total)[start:] + np.repeat(offsets[1:], sizes[1:, j])
        codes = faiss.rev_swig_ptr(lists.get_codes(j), total * code_size)[start * code_size :].copy()
        lists.update_entries(j, start, n, faiss.swig_ptr(np.ascontiguousarray(ids)), faiss.swig_ptr(codes))


def _ondisk_file(index: Any) -> str:
    faiss = _faiss()
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    return str(lists.filename) if isinstance(lists, faiss.OnDiskInvertedLists) else ""


def _read_mapped(file: Path) -> Any:
    faiss = _faiss()
    try:
        return faiss.read_index(str(file), faiss.IO_FLAG_MMAP)
    except RuntimeError as exc:
        raise VectorIndexError(f"cannot read FAISS index {file}: {_last_line(exc)}") from exc
