"""What the caption decoder is prompted with: the k nearest distinct captions, leaving out what must not leak.

Two paths give the same neighbours on an exact (Flat) index:
- `leave_out`: brute force over numpy arrays, for training, where every indexed image needs its
  neighbours with something left out: its concept (its other styles, its own caption) or only its
  own image (the item itself and any item with the same image content);
- `distinct_captions`: filters the hits of `Searcher.search_vectors`, for captioning and
  evaluation, which go through the workspace's FAISS index like any search.
Captions are deduplicated by text: three styles of one concept share one caption, and a prompt
that repeats it three times holds less than one with three different neighbours.

What is left out is one of `EXCLUDE_MODES`, as a key per row (`IndexedCaptions.leave_out_keys`):
- `concept`: the item's *concept* (`concept_key`): its group, except that an emoji's skin-tone
  variants belong to their base concept, as in the evaluation protocols, which hold a concept out
  together with its variants. Leaving out only the exact group would let a base emoji be trained
  on "man golfing: light skin tone" as a neighbour of "man golfing": a near-copy of the answer
  that an unseen concept never has.
- `item`: the item itself and every item with the same image content (sha256), so its
  concept's other styles may be retrieved: the case of a new collection of things the index
  already knows, where a retrieved caption can be exactly right.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmgen.data.concepts import concept_key
from mmgen.errors import ConfigError, DataError

if TYPE_CHECKING:
    from mmgen.index.rows import LoadedIndex
    from mmgen.search import Hit

# Extra candidates fetched beyond k to survive deduplication and exclusion.
FETCH_FACTOR = 4
FETCH_EXTRA = 16
QUERY_CHUNK = 1024
EXCLUDE_ITEM = "item"
EXCLUDE_CONCEPT = "concept"
EXCLUDE_MODES = (EXCLUDE_ITEM, EXCLUDE_CONCEPT)


def check_exclude_mode(mode: str) -> str:
    """The mode itself, or ConfigError naming the valid ones."""
    if mode not in EXCLUDE_MODES:
        raise ConfigError(f"unknown exclusion {mode!r}; valid: {', '.join(EXCLUDE_MODES)}")
    return mode


@dataclass
class Retrieved:
    """One retrieved caption: its item, text and cosine score."""

    id: int
    text: str
    score: float
    group: str | None = None

    def to_json(self) -> dict[str, object]:
        """`{"id", "text", "score"}` as `mmgen caption --json` prints it."""
        return {"id": self.id, "text": self.text, "score": round(float(self.score), 6)}


@dataclass
class IndexedCaptions:
    """The captioned items of one index: ids, texts, groups, image hashes and their image/text vectors."""

    item_ids: np.ndarray  # (n,) int64
    texts: list[str]
    groups: list[str]  # concept keys (see `concept_key`)
    image_sha: list[str | None]  # sha256 of the indexed image's content; None without an image
    image: np.ndarray  # (n, d) float32; rows of items without an image vector are zero
    has_image: np.ndarray  # (n,) bool
    text: np.ndarray  # (n, d) float32

    def subset(self, keep: np.ndarray) -> IndexedCaptions:
        """The rows where the boolean mask `keep` is true."""
        return IndexedCaptions(
            item_ids=self.item_ids[keep],
            texts=[t for t, k in zip(self.texts, keep) if k],
            groups=[g for g, k in zip(self.groups, keep) if k],
            image_sha=[h for h, k in zip(self.image_sha, keep) if k],
            image=self.image[keep],
            has_image=self.has_image[keep],
            text=self.text[keep],
        )

    def leave_out_keys(self, mode: str) -> list[str]:
        """Per row, the key `leave_out` compares: its concept (`concept`), or its image content (`item`).

        An item without an image is keyed by its id in `item` mode: it is identical to no other.
        """
        if check_exclude_mode(mode) == EXCLUDE_CONCEPT:
            return [f"concept:{g}" for g in self.groups]
        return [f"image:{h}" if h else f"item:{int(i)}" for h, i in zip(self.image_sha, self.item_ids)]


def load_indexed_captions(loaded: LoadedIndex) -> IndexedCaptions:
    """Every item of a loaded index (`mmgen.index.rows.load_vectors`) that has a text vector, with its image vector."""
    texts = loaded.modalities.get("text")
    images = loaded.modalities.get("image")
    text_pos: dict[int, int] = {}
    if texts is not None:
        for pos, item_id in enumerate(texts.item_ids.tolist()):
            text = loaded.items[item_id].text
            if text is not None and text.strip():
                text_pos[item_id] = pos
    ids = sorted(text_pos)
    if not ids or texts is None or texts.vectors is None:
        raise DataError("the index holds no captions (text vectors); index a captioned corpus first")
    image_pos: dict[int, int] = {}
    image_sha: dict[int, str | None] = {}
    if images is not None:
        for pos, (item_id, sha) in enumerate(zip(images.item_ids.tolist(), images.sha256)):
            image_pos[item_id] = pos
            image_sha[item_id] = sha  # the image file's content hash, as the indexer computed it
    has_image = np.array([i in image_pos for i in ids], dtype=bool)
    image = np.zeros((len(ids), loaded.dim), dtype=np.float32)
    if has_image.any() and images is not None and images.vectors is not None:
        image[has_image] = images.vectors[[image_pos[i] for i in ids if i in image_pos]]
    return IndexedCaptions(
        item_ids=np.array(ids, dtype=np.int64),
        texts=[str(loaded.items[i].text) for i in ids],
        groups=[concept_key(loaded.items[i].group, loaded.items[i].meta, i) for i in ids],
        image_sha=[image_sha.get(i) for i in ids],
        image=image,
        has_image=has_image,
        text=np.ascontiguousarray(texts.vectors[[text_pos[i] for i in ids]]),
    )


def exclude_concepts(corpus: IndexedCaptions, manifests: Sequence[str | Path]) -> tuple[IndexedCaptions, int]:
    """The corpus without the concepts of the manifests' records (a test split kept out of training).

    Returns the reduced corpus and the number of items left out. Concepts are compared as
    `concept_key` makes them (emoji skin-tone variants count as their base concept).
    """
    from mmgen.data.records import read_records
    from mmgen.data.concepts import concept_of

    concepts = {concept_of(r) for path in manifests for r in read_records(path) if r.group is not None}
    keep = np.array([g not in concepts for g in corpus.groups], dtype=bool)
    if not keep.any():
        raise DataError("every captioned item of the index belongs to an excluded concept; nothing left to train on")
    return corpus.subset(keep), int((~keep).sum())


def leave_out(
    queries: np.ndarray,
    query_keys: Sequence[str],
    candidates: np.ndarray,
    candidate_keys: Sequence[Sequence[str]],
    candidate_texts: Sequence[str],
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the k best distinct-text candidates not carrying the query's key: (indices, scores), -1 padded.

    A candidate carries several keys (say its concept and its image's hash) and is left out for a
    query whose key is any of them, so each query chooses what it leaves out by the key it brings.
    Scores are inner products (cosine for L2-normalised rows); ties keep the lower index.
    """
    if k < 1:
        raise ConfigError("k must be at least 1")
    if len(queries) != len(query_keys) or not (len(candidates) == len(candidate_keys) == len(candidate_texts)):
        raise ConfigError("vectors, keys and texts must have one entry per row")
    codes: dict[str, int] = {}
    qk = np.array([codes.setdefault(key, len(codes)) for key in query_keys], dtype=np.int64)
    width = max((len(keys) for keys in candidate_keys), default=0)
    ck = np.full((len(candidates), width), -1, dtype=np.int64)  # -1 pads: no query has that code
    for j, keys in enumerate(candidate_keys):
        ck[j, : len(keys)] = [codes.setdefault(key, len(codes)) for key in keys]
    text_codes: dict[str, int] = {}
    ct = np.array([text_codes.setdefault(t, len(text_codes)) for t in candidate_texts], dtype=np.int64)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.zeros((len(queries), k), dtype=np.float32)
    fetch = min(len(candidates), FETCH_FACTOR * k + FETCH_EXTRA)
    c = np.ascontiguousarray(candidates, dtype=np.float32)
    for start in range(0, len(queries), QUERY_CHUNK):
        scores = np.ascontiguousarray(queries[start : start + QUERY_CHUNK], dtype=np.float32) @ c.T
        chunk_keys = qk[start : start + QUERY_CHUNK, None]
        for column in ck.T:
            scores[chunk_keys == column[None, :]] = -np.inf
        for row, s in enumerate(scores):
            i = start + row
            top = _top(s, fetch)
            picked = _distinct(top, s, ct, k)
            if len(picked) < k and fetch < len(s):  # many duplicates near the top: look at everything
                picked = _distinct(_top(s, len(s)), s, ct, k)
            out[i, : len(picked)] = picked
            out_scores[i, : len(picked)] = s[picked]
    return out, out_scores


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n best scores, best first, lower index first among equals."""
    if n < len(scores):
        part = np.argpartition(-scores, n - 1)[:n]
        threshold = scores[part].min()
        part = np.flatnonzero(scores >= threshold)  # keep every tie at the cut, so ties order by index
    else:
        part = np.arange(len(scores))
    order = np.lexsort((part, -scores[part]))
    return part[order][:n]


def _distinct(order: np.ndarray, scores: np.ndarray, text_codes: np.ndarray, k: int) -> list[int]:
    picked: list[int] = []
    seen: set[int] = set()
    for j in order:
        if not np.isfinite(scores[j]):
            break
        code = int(text_codes[j])
        if code in seen:
            continue
        seen.add(code)
        picked.append(int(j))
        if len(picked) == k:
            break
    return picked


def fetch_size(k: int) -> int:
    """How many search hits to ask for so that k distinct captions remain after exclusion."""
    return FETCH_FACTOR * k + FETCH_EXTRA


def distinct_captions(
    hits: Sequence[Hit],
    k: int,
    exclude_groups: Collection[str] = (),
    exclude_items: Collection[int] = (),
) -> list[Retrieved]:
    """The first k hits with a non-empty text, not excluded (items, or concepts as `concept_key`), each text once."""
    out: list[Retrieved] = []
    seen: set[str] = set()
    for hit in hits:
        if hit.text is None or not hit.text.strip() or hit.id in exclude_items:
            continue
        group = concept_key(hit.group, hit.meta, hit.id)
        if group in exclude_groups or hit.text in seen:
            continue
        seen.add(hit.text)
        out.append(Retrieved(hit.id, hit.text, hit.score, group))
        if len(out) == k:
            break
    return out


def consensus_order(vectors: np.ndarray) -> np.ndarray:
    """Candidates ordered by mean cosine to the other candidates (kNN consensus), best first; ties keep rank."""
    n = len(vectors)
    if n <= 2:  # with one or two candidates, consensus cannot prefer one: keep the retrieval order
        return np.arange(n)
    sims = vectors @ vectors.T
    mean = (sims.sum(axis=1) - np.diag(sims)) / (n - 1)
    return np.lexsort((np.arange(n), -np.round(mean, 6)))
