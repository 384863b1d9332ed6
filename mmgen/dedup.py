"""Duplicates in an index: exact copies by content hash, near copies by cosine of their vectors.

- `exact_groups`: items of one index whose recorded content hash is the same (byte-identical files);
- `near_groups`: connected components of the pairs whose cosine is at least a threshold, found with
  FAISS range search in chunks of queries, so memory stays bounded by one chunk's results;
- `find_duplicates`: both over one index of a workspace, as a `DedupReport` (`mmgen dedup`);
- `collapse`: which hits of a ranked list to keep when a hit this close to a higher-ranked kept hit
  is dropped (clip-retrieval's `deduplicate`; `mmgen serve` and `mmgen search --dedup`).

Near groups are transitive: a chain of copies, each close to the next, is one group even when its
ends are further apart than the threshold. Exact copies score 1 and so are in a near group too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.errors import ConfigError, DataError, UnknownNameError

if TYPE_CHECKING:
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace

DEFAULT_THRESHOLD = 0.95
MODALITIES = ("image", "text")
# float32 rounding: two copies of one L2-normalised vector can score 0.99999994, and a pair meant
# to sit exactly on the threshold must not fall off it.
COSINE_TOLERANCE = 1e-6
RANGE_CHUNK = 1024  # query rows per FAISS range search: the results held at once are at most CHUNK x n
SQL_CHUNK = 500  # ids per IN (...) list


@dataclass
class ItemRef:
    """What a reader needs to recognise an item of a group."""

    id: int
    corpus: str
    key: str
    text: str | None
    uri: str | None

    def to_json(self) -> dict[str, Any]:
        """The item as JSON: id, corpus, key, text, uri."""
        return {"id": self.id, "corpus": self.corpus, "key": self.key, "text": self.text, "uri": self.uri}


@dataclass
class DedupReport:
    """The duplicate groups of one index and modality (item ids; each group sorted, largest group first)."""

    index: str
    modality: str
    threshold: float
    items: int  # items of the index with a vector (and a hash) of this modality
    exact: list[list[int]]
    near: list[list[int]]
    exact_only: bool = False  # True: the vector pass was skipped and `near` is empty
    hashes: dict[int, str] = field(default_factory=dict)  # first item of an exact group -> its sha256
    refs: dict[int, ItemRef] = field(default_factory=dict)  # every item of a group
    seconds: dict[str, float] = field(default_factory=dict)
    # the picture check of near pairs (PictureCheck.summary()); None when it did not run
    picture_check: dict[str, Any] | None = None

    def duplicates(self, kind: str) -> int:
        """Items that are not the first of their group: what removing the copies would save."""
        groups = self.exact if kind == "exact" else self.near
        return sum(len(g) - 1 for g in groups)

    def to_json(self) -> dict[str, Any]:
        """The `mmgen dedup --json` shape: counts, then every group with its items."""

        def items(group: list[int]) -> list[dict[str, Any]]:
            return [self.refs[i].to_json() if i in self.refs else {"id": i} for i in group]

        return {
            "index": self.index,
            "modality": self.modality,
            "threshold": self.threshold,
            "exact_only": self.exact_only,
            "items": self.items,
            "counts": {
                "exact_groups": len(self.exact),
                "exact_duplicates": self.duplicates("exact"),
                "near_groups": len(self.near),
                "near_duplicates": self.duplicates("near"),
            },
            "exact": [{"size": len(g), "sha256": self.hashes.get(g[0]), "items": items(g)} for g in self.exact],
            "near": [{"size": len(g), "items": items(g)} for g in self.near],
            "picture_check": self.picture_check,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


def check_threshold(threshold: float) -> float:
    """The threshold as a float when it is a cosine in (0, 1]; ConfigError otherwise."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError(f"the duplicate threshold must be a number in (0, 1], not {threshold!r}") from None
    if not 0.0 < value <= 1.0:  # NaN fails this too
        raise ConfigError(
            f"the duplicate threshold is a cosine similarity in (0, 1] (1: identical vectors), not {threshold!r}; "
            f"the default is {DEFAULT_THRESHOLD}"
        )
    return value


def exact_groups(store: Store, index_id: int, modality: str = "image") -> list[list[int]]:
    """Items of one index whose content hash is identical: groups of 2 or more item ids, largest first.

    The hash is the index row's (`IndexRow.sha256`): for images the file's bytes, for texts the
    caption's, so two copies of one picture with different captions are still one group (the
    item's own hash, `Item.sha256`, covers its caption and metadata too).
    """
    groups = _hash_groups(store, index_id, _check_modality(modality))
    return [g for _, g in groups]


def near_groups(
    vectors: np.ndarray, item_ids: Sequence[int] | np.ndarray, threshold: float = DEFAULT_THRESHOLD,
    chunk: int = RANGE_CHUNK, confirm: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> list[list[int]]:  # fmt: skip
    """Connected components of the pairs with cosine >= threshold: groups of 2 or more item ids, largest first.

    `vectors` are (n, d) float32 L2-normalised rows, `item_ids[i]` the item of row i. Each group
    is sorted by item id; groups of one size are ordered by their first id. `confirm(left, right)`,
    when given, sees each chunk of pairs (row arrays) and returns a bool per pair: only the pairs
    it keeps join groups (`mmgen.dedup_pixels.PictureCheck`).
    """
    threshold = check_threshold(threshold)
    vectors, ids = _check_rows(vectors, item_ids)
    if chunk < 1:
        raise ConfigError(f"chunk must be at least 1, not {chunk}")
    n = len(ids)
    if n < 2:
        return []
    labels = np.arange(n, dtype=np.int64)
    for left, right in range_pairs(vectors, threshold, chunk):
        if confirm is not None:
            keep = np.asarray(confirm(left, right), dtype=bool)
            left, right = left[keep], right[keep]
        _union(labels, left, right)
    return _components(labels, ids)


def range_pairs(
    vectors: np.ndarray, threshold: float, chunk: int = RANGE_CHUNK
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (left, right) row arrays of the pairs left < right with cosine >= threshold, one chunk of rows at a time.

    `vectors` are (n, d) contiguous float32 L2-normalised rows; `threshold` is not checked here.
    """
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    radius = threshold - COSINE_TOLERANCE
    for start in range(0, len(vectors), chunk):
        lims, scores, found = index.range_search(vectors[start : start + chunk], radius)
        rows = start + np.repeat(np.arange(len(lims) - 1, dtype=np.int64), np.diff(lims.astype(np.int64)))
        keep = (found > rows) & (scores >= radius)  # each pair once, never a row with itself
        if keep.any():
            yield rows[keep], found[keep].astype(np.int64)


def collapse(hits_vectors: np.ndarray, threshold: float) -> list[int]:
    """Positions of the hits to keep, in rank order, dropping a hit as close as `threshold` to a higher-ranked kept one.

    `hits_vectors` are the hits' (k, d) L2-normalised vectors, best hit first; the best hit is
    always kept, and a hit is compared with the kept hits only (a copy of a dropped hit can stay).
    """
    threshold = check_threshold(threshold)
    vectors = np.asarray(hits_vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ConfigError(f"hit vectors must be a 2-d (k, dim) array, not shape {vectors.shape}")
    if len(vectors) < 2:
        return list(range(len(vectors)))
    cosines = vectors @ vectors.T
    kept: list[int] = [0]
    for i in range(1, len(vectors)):
        if float(cosines[i, kept].max()) < threshold - COSINE_TOLERANCE:
            kept.append(i)
    return kept


def find_duplicates(
    ws: Workspace, store: Store, index: str | None = None, threshold: float = DEFAULT_THRESHOLD,
    exact_only: bool = False, modality: str = "image", check_pictures: bool = True,
    min_structure: float | None = None,
) -> DedupReport:  # fmt: skip
    """Exact and (unless `exact_only`) near duplicate groups among one index's items of one modality.

    For images, `check_pictures` confirms each near pair by its two pictures' structure score
    (`mmgen.dedup_pixels`; at least `min_structure`, default `DEFAULT_MIN_STRUCTURE`): two styles of
    one concept whose vectors are close but whose drawings differ are not copies.
    """
    import time

    from mmgen.dedup_pixels import DEFAULT_MIN_STRUCTURE, PictureCheck, check_min_structure
    from mmgen.index.rows import load_vectors, pick_index_name

    threshold = check_threshold(threshold)
    bound = check_min_structure(DEFAULT_MIN_STRUCTURE if min_structure is None else min_structure)
    modality = _check_modality(modality)
    name = pick_index_name(store, index)
    started = time.perf_counter()
    loaded = load_vectors(ws, store, name, (modality,), vectors=not exact_only)
    rows = loaded.modalities.get(modality)
    if rows is None or not len(rows):
        others = [m for m in MODALITIES if m != modality and _has_rows(store, loaded.index_id, m)]
        hint = f"; it holds {others[0]} vectors (--modality {others[0]})" if others else ""
        raise DataError(f"index {name!r} holds no {modality} vectors{hint}")
    seconds = {"load": time.perf_counter() - started}
    started = time.perf_counter()
    hashed = _hash_groups(store, loaded.index_id, modality)
    seconds["exact"] = time.perf_counter() - started
    near: list[list[int]] = []
    checker = None
    if not exact_only:
        started = time.perf_counter()
        if check_pictures and modality == "image":
            checker = PictureCheck([loaded.items[int(i)].uri for i in rows.item_ids], bound)
        near = near_groups(np.ascontiguousarray(rows.vectors, dtype=np.float32), rows.item_ids, threshold,
                           confirm=checker)  # fmt: skip
        seconds["near"] = time.perf_counter() - started
    exact = [g for _, g in hashed]
    grouped = sorted({i for g in itertools.chain(exact, near) for i in g})
    refs = _item_refs(store, grouped)
    return DedupReport(
        index=name, modality=modality, threshold=threshold, items=len(rows), exact=exact, near=near,
        exact_only=exact_only, hashes={g[0]: h for h, g in hashed}, refs=refs, seconds=seconds,
        picture_check=checker.summary() if checker is not None else None,
    )  # fmt: skip


# ---- helpers -------------------------------------------------------------------------------
def _check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise UnknownNameError("modality", modality, MODALITIES)
    return modality


def _check_rows(vectors: np.ndarray, item_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.asarray(item_ids, dtype=np.int64)
    if vectors.ndim != 2 or ids.ndim != 1 or len(ids) != len(vectors):
        raise ConfigError(f"vectors {vectors.shape} and item ids {ids.shape} do not match: one id per row")
    return vectors, ids


def _has_rows(store: Store, index_id: int, modality: str) -> bool:
    from mmgen.index.rows import sql_row_state

    return sql_row_state(store, index_id, modality)[0] > 0


def _hash_groups(store: Store, index_id: int, modality: str) -> list[tuple[str, list[int]]]:
    """(sha256, item ids) of every hash held by 2 or more rows, largest group first."""
    from sqlalchemy import func, select

    from mmgen.store.models import IndexRow

    where = (IndexRow.index_id == index_id, IndexRow.modality == modality)
    with store.session() as s:
        shared = select(IndexRow.sha256).where(*where).group_by(IndexRow.sha256).having(func.count() > 1)
        rows = s.execute(
            select(IndexRow.sha256, IndexRow.item_id).where(*where, IndexRow.sha256.in_(shared))
            .order_by(IndexRow.sha256, IndexRow.item_id)
        ).all()  # fmt: skip
    groups = [(sha, [int(r[1]) for r in members]) for sha, members in itertools.groupby(rows, key=lambda r: r[0])]
    groups.sort(key=lambda g: (-len(g[1]), g[1][0]))
    return groups


def _item_refs(store: Store, item_ids: list[int]) -> dict[int, ItemRef]:
    """Corpus, key, text and uri of the items, read in chunks of ids."""
    from sqlalchemy import select

    from mmgen.store.models import Corpus, Item

    refs: dict[int, ItemRef] = {}
    with store.session() as s:
        for start in range(0, len(item_ids), SQL_CHUNK):
            part = item_ids[start : start + SQL_CHUNK]
            for item_id, corpus, key, text, uri in s.execute(
                select(Item.id, Corpus.name, Item.key, Item.text, Item.uri)
                .join(Corpus, Corpus.id == Item.corpus_id).where(Item.id.in_(part))
            ):  # fmt: skip
                refs[int(item_id)] = ItemRef(int(item_id), corpus, key, text, uri)
    return refs


def _roots(labels: np.ndarray) -> np.ndarray:
    """Point every node at its root (pointer jumping), in place; returns labels."""
    while True:
        up = labels[labels]
        if np.array_equal(up, labels):
            return labels
        labels[:] = up


def _union(labels: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
    """Merge the components of each (left[i], right[i]) edge, vectorised: roots hook to the smaller root."""
    while len(left):
        _roots(labels)
        a, b = labels[left], labels[right]
        apart = a != b
        if not apart.any():
            return
        a, b = a[apart], b[apart]
        # Every pointer goes to a smaller index, so hooking never makes a cycle; each pass joins roots.
        np.minimum.at(labels, np.maximum(a, b), np.minimum(a, b))
        left, right = left[apart], right[apart]


def _components(labels: np.ndarray, ids: np.ndarray) -> list[list[int]]:
    """Groups of 2 or more item ids sharing a root: each sorted, largest first, then by first id."""
    _roots(labels)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    groups = [sorted(ids[part].tolist()) for part in np.split(order, bounds) if len(part) >= 2]
    groups.sort(key=lambda g: (-len(g), g[0]))
    return groups
