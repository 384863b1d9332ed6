"""Image-text retrieval Recall@k in both directions, with CLIP_benchmark's definition of a hit.

A query scores 1 at k when any relevant candidate (same `group`) is among its k best-scored
candidates. Ranks are computed in chunks of queries, so a 20k x 20k evaluation never holds a
dense score or relevance matrix.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.data.records import Record, read_records
from mmgen.errors import ConfigError, DataError, ImageLoadError
from mmgen.eval.keyword_ranks import keyword_document, ranks_by_mode
from mmgen.hybrid import Retrieval

if TYPE_CHECKING:
    from PIL import Image

    from mmgen.encoders import Encoder

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
QUERY_CHUNK = 512
ROLES = ("query", "candidate")
MAX_REASONS = 50
_TEXT_CHUNK = 1024


def recall_at_k(scores: np.ndarray, positives: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Fraction of queries with a positive in their top k, as {"R@k": ...}; rows are queries.

    Queries without any positive are left out (count them with `best_positive_ranks`); DataError
    when none remain. A k above the number of candidates is clipped.
    """
    return recall_from_ranks(best_positive_ranks(scores, positives), ks)


def best_positive_ranks(scores: np.ndarray, positives: np.ndarray, chunk: int = QUERY_CHUNK) -> np.ndarray:
    """0-based rank of each query's best-ranked positive, -1 for a query with no positive.

    The rank is the number of negatives scoring at least as high as the best positive: a tie
    between a positive and a negative counts against the query, so degenerate embeddings (all
    equal) never look perfect. Without ties this is exactly CLIP_benchmark's top-k test.
    """
    s = np.asarray(scores)
    p = np.asarray(positives, dtype=bool)
    if s.ndim != 2 or s.shape != p.shape:
        raise ConfigError(f"scores and positives must be 2-D and of one shape, got {s.shape} and {p.shape}")
    ranks = np.empty(len(s), dtype=np.int64)
    for start in range(0, len(s), chunk):
        ranks[start : start + chunk] = _chunk_ranks(s[start : start + chunk], p[start : start + chunk])
    return ranks


def recall_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Turn best-positive ranks (-1: no positive, left out) into {"R@k": fraction}."""
    _check_ks(ks)
    valid = ranks[ranks >= 0]
    if len(valid) == 0:
        raise DataError("no query has a relevant candidate (same group): recall is undefined")
    return {f"R@{k}": float(np.count_nonzero(valid < k)) / len(valid) for k in ks}


def _check_ks(ks: Sequence[int]) -> None:
    if not ks or any(not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1 for k in ks):
        raise ConfigError(f"ks must be positive integers, got {list(ks)}")


def _chunk_ranks(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    best = np.where(positives, scores, -np.inf).max(axis=1, initial=-np.inf)
    ranks = np.count_nonzero((scores >= best[:, None]) & ~positives, axis=1).astype(np.int64)
    ranks[~positives.any(axis=1)] = -1
    return ranks


def _group_ranks(
    queries: np.ndarray, query_groups: np.ndarray, candidates: np.ndarray, candidate_groups: np.ndarray
) -> np.ndarray:
    """best_positive_ranks over embeddings and integer group ids, one chunk of scores at a time."""
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), QUERY_CHUNK):
        stop = start + QUERY_CHUNK
        scores = queries[start:stop] @ candidates.T
        positives = query_groups[start:stop, None] == candidate_groups[None, :]
        ranks[start:stop] = _chunk_ranks(scores, positives)
    return ranks


@dataclass
class RetrievalReport:
    """Recall@k both ways, the pool sizes, and every record left out with its reason."""

    image_to_text: dict[str, float]
    text_to_image: dict[str, float]
    n_images: int
    n_texts: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    encoder: str = ""
    manifest: str = ""
    n_image_queries: int = 0  # image queries scored (role "query", with a relevant text)
    n_text_queries: int = 0
    unmatched_queries: dict[str, int] = field(default_factory=dict)  # queries with nothing relevant, left out
    retrieval: dict[str, Any] = field(default_factory=lambda: {"retrieval": "vector"})  # text->image's
    text_to_image_also: dict[str, dict[str, float]] = field(default_factory=dict)  # by other retrievals

    def to_json(self) -> dict[str, Any]:
        """The stable `--json` form of `mmgen eval retrieval`."""
        return {
            "image_to_text": dict(self.image_to_text),
            "text_to_image": dict(self.text_to_image),
            "n_images": self.n_images,
            "n_texts": self.n_texts,
            "n_image_queries": self.n_image_queries,
            "n_text_queries": self.n_text_queries,
            "unmatched_queries": dict(self.unmatched_queries),
            "skipped": len(self.skipped),
            "skipped_reasons": [f"{key}: {reason}" for key, reason in self.skipped[:MAX_REASONS]],
            "encoder": self.encoder,
            "manifest": self.manifest,
            "text_to_image_retrieval": dict(self.retrieval),
            **({"text_to_image_also": dict(self.text_to_image_also)} if self.text_to_image_also else {}),
        }


@dataclass
class _Entry:
    key: str
    group: str
    image: str | None
    texts: list[str]
    is_query: bool
    ok: bool = True
    doc: str = ""  # its keyword document (`keyword_ranks.keyword_document`), for --mode keyword / hybrid


def evaluate_retrieval(
    records: Iterable[Record],
    encoder: Encoder,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    progress: bool = True,
    batch_size: int = 64,
    all_captions: bool = False,
    manifest: str = "",
    retrieval: Retrieval | None = None,
    also: Sequence[Retrieval] = (),
) -> RetrievalReport:
    """Recall@k image->text and text->image over every image and text of the records.

    `retrieval` ranks text->image (vector, keyword or hybrid); each of `also` adds a text->image
    recall by another retrieval over the same embeddings (`text_to_image_also`, keyed by its label).

    Each record with an image adds one image; each record with text adds its `text` (with
    `all_captions`, every entry of `meta["captions"]` instead, where present). Items relate when
    they share `group` (a record without one is its own group). Identical (text, group) pairs are
    merged into one text, so a concept whose three art styles share the caption "bus" is one text
    query, not three: CLIP_benchmark's one-caption-per-(image, caption) structure without counting
    a caption several times. A record with `meta["role"] == "candidate"` is retrievable but never a
    query (held-out concepts against a larger pool in one manifest). A record with an error, an
    image that cannot be decoded or a blank text is left out and listed in `skipped`; a query with
    no relevant candidate is left out and counted in `unmatched_queries`.
    """
    if "image" not in encoder.modalities:
        raise ConfigError(
            f"encoder {encoder.name} embeds text only; image-text retrieval needs a joint encoder "
            "(openclip:... or mmgen:...)"
        )
    _check_ks(ks)
    skipped: list[tuple[str, str]] = []
    entries = _collect(records, skipped, all_captions)
    image_entries = [e for e in entries if e.image is not None]
    image_emb = _encode_images(image_entries, encoder, batch_size, progress, skipped)
    kept = [i for i, e in enumerate(image_entries) if e.ok]
    image_emb = image_emb[kept]
    image_entries = [image_entries[i] for i in kept]

    text_index: dict[tuple[str, str], int] = {}
    text_query: list[bool] = []
    for e in entries:
        if not e.ok:
            continue
        for text in e.texts:
            i = text_index.setdefault((text, e.group), len(text_index))
            if i == len(text_query):
                text_query.append(e.is_query)
            else:
                text_query[i] = text_query[i] or e.is_query
    if not image_entries:
        raise DataError("no usable image in the manifest: image-text retrieval needs images and texts")
    if not text_index:
        raise DataError("no usable text in the manifest: image-text retrieval needs images and texts")
    texts = [t for t, _ in text_index]
    text_emb = _encode_texts(texts, encoder, progress)

    groups: dict[str, int] = {}
    image_groups = np.array([groups.setdefault(e.group, len(groups)) for e in image_entries], dtype=np.int64)
    text_groups = np.array([groups.setdefault(g, len(groups)) for _, g in text_index], dtype=np.int64)
    image_q = np.array([e.is_query for e in image_entries], dtype=bool)
    text_q = np.array(text_query, dtype=bool)
    for name, asked in (("image", image_q), ("text", text_q)):
        if not asked.any():
            raise DataError(f"every usable {name} belongs to a record with role 'candidate': no {name} query")

    i2t = _group_ranks(image_emb[image_q], image_groups[image_q], text_emb, text_groups)
    how = (retrieval or Retrieval()).check()
    asked = [t for t, q in zip(texts, text_q) if q]
    docs = [e.doc for e in image_entries]

    def t2i_ranks(how: Retrieval) -> np.ndarray:
        if how.kind == "vector":
            return _group_ranks(text_emb[text_q], text_groups[text_q], image_emb, image_groups)
        # keyword / hybrid text->image; image->text stays vector (an image has no words to match)
        return ranks_by_mode(how, asked, text_emb[text_q], text_groups[text_q], image_emb, image_groups, docs,
                             depth=how.depth_for(100))  # fmt: skip

    t2i = t2i_ranks(how)
    also_recall = {h.check().label(): _recall_or_explain(t2i_ranks(h), ks, "text", "image") for h in also}
    return RetrievalReport(
        image_to_text=_recall_or_explain(i2t, ks, "image", "text"),
        text_to_image=_recall_or_explain(t2i, ks, "text", "image"),
        n_images=len(image_entries),
        n_texts=len(texts),
        skipped=skipped,
        encoder=encoder.name,
        manifest=manifest,
        n_image_queries=int(np.count_nonzero(i2t >= 0)),
        n_text_queries=int(np.count_nonzero(t2i >= 0)),
        retrieval=how.to_json(),
        text_to_image_also=also_recall,
        unmatched_queries={
            "image_to_text": int(np.count_nonzero(i2t < 0)),
            "text_to_image": int(np.count_nonzero(t2i < 0)),
        },
    )


def evaluate_manifest(
    path: str | Path,
    encoder_name: str,
    *,
    device: str = "auto",
    progress: bool = True,
    batch_size: int = 64,
    models_dir: Path | None = None,
    retrieval: Retrieval | None = None,
) -> RetrievalReport:
    """Load an encoder by name and evaluate retrieval over a JSONL/CSV manifest."""
    from mmgen.encoders import load_encoder

    records = read_records(path)  # raises DataError for a missing or unsupported file before any model loads
    first = next(records, None)
    encoder = load_encoder(encoder_name, device=device, models_dir=models_dir)
    chained = records if first is None else _prepend(first, records)
    return evaluate_retrieval(
        chained, encoder, progress=progress, batch_size=batch_size, manifest=str(path), retrieval=retrieval
    )


def _prepend(first: Record, rest: Iterator[Record]) -> Iterator[Record]:
    yield first
    yield from rest


def _recall_or_explain(ranks: np.ndarray, ks: Sequence[int], query: str, candidate: str) -> dict[str, float]:
    if not np.any(ranks >= 0):
        raise DataError(
            f"no {query} query has a relevant {candidate} (same group): check the manifest's groups "
            f"({len(ranks)} {query} queries)"
        )
    return recall_from_ranks(ranks, ks)


def _collect(records: Iterable[Record], skipped: list[tuple[str, str]], all_captions: bool) -> list[_Entry]:
    entries: list[_Entry] = []
    for r in records:
        if r.error is not None:
            skipped.append((r.key, r.error))
            continue
        role = r.meta.get("role") or "query"
        if role not in ROLES:
            skipped.append((r.key, f"unknown meta.role {role!r} (expected {' or '.join(ROLES)})"))
            continue
        texts: list[str] = []
        if r.text is not None:
            if not r.text.strip():
                skipped.append((r.key, "empty text"))
                continue
            texts = [r.text]
            captions = r.meta.get("captions")
            if all_captions and isinstance(captions, list):
                texts = list(dict.fromkeys(c for c in captions if isinstance(c, str) and c.strip())) or texts
        if r.image is None and not texts:
            skipped.append((r.key, "neither image nor text"))
            continue
        doc = keyword_document(r.meta, r.image, r.text)
        entries.append(_Entry(r.key, r.group or r.key, r.image, texts, role == "query", doc=doc))
    return entries


def _load(path: str) -> Image.Image:
    from mmgen.data.images import load_image

    return load_image(path)


def _encode_images(
    entries: list[_Entry], encoder: Encoder, batch_size: int, progress: bool, skipped: list[tuple[str, str]]
) -> np.ndarray:
    """Decode (thread pool, one batch ahead) and embed images; a failed decode marks its entry not ok."""
    from mmgen.devices import cpu_threads

    out = np.zeros((len(entries), encoder.dim), dtype=np.float32)
    if not entries:
        return out
    starts = list(range(0, len(entries), batch_size))
    with ThreadPoolExecutor(max_workers=cpu_threads()) as pool, _bar(len(entries), "encode images", progress) as bar:
        pending: collections.deque[list[Future[Image.Image]]] = collections.deque()

        def submit(start: int) -> None:
            pending.append([pool.submit(_load, str(e.image)) for e in entries[start : start + batch_size]])

        for start in starts[:2]:
            submit(start)
        for n, start in enumerate(starts):
            futures = pending.popleft()
            if n + 2 < len(starts):
                submit(starts[n + 2])
            good: list[int] = []
            pictures: list[Image.Image] = []
            for offset, future in enumerate(futures):
                entry = entries[start + offset]
                try:
                    pictures.append(future.result())
                    good.append(start + offset)
                except ImageLoadError as e:
                    entry.ok = False
                    skipped.append((entry.key, f"image: {e}"))
            if pictures:
                out[good] = encoder.encode_image(pictures, batch_size=batch_size)
            bar.update(len(futures))
    return out


def _encode_texts(texts: list[str], encoder: Encoder, progress: bool) -> np.ndarray:
    parts = []
    with _bar(len(texts), "encode texts", progress) as bar:
        for start in range(0, len(texts), _TEXT_CHUNK):
            chunk = texts[start : start + _TEXT_CHUNK]
            parts.append(encoder.encode_text(chunk))
            bar.update(len(chunk))
    return np.concatenate(parts)


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _bar(total: int, desc: str, progress: bool) -> Any:
    """A tqdm bar on stderr, or a no-op (as a context manager either way)."""
    if not progress:
        return contextlib.nullcontext(_NoBar())
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, leave=False)
