"""`mmgen search`: encode a query, search FAISS, join the hits to SQL, record the search.

Modes (one small strategy each, `MODES`): `float` (exact inner product on the float index),
`codes` (Hamming ranking of the hasher's packed codes in the binary index) and `rerank` (a
Hamming short list of C candidates, re-scored exactly against the float vectors memory-mapped
from the vector file, so RAM holds only the codes). The hasher maps text queries and image
queries into one code space, so a text query ranks image codes and the reverse.

A `Searcher` only reads: stale FAISS files are caught up with SQL when it opens (codes when
they are first used), and the index's modalities and corpus names are cached from then on.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from mmgen.errors import ConfigError, ManifestMismatchError, VectorIndexError
from mmgen.index import IndexFolder
from mmgen.index.vectors import VectorFile
from mmgen.catalog import catch_up, catch_up_codes, pick_index_name, sql_row_state
from mmgen.store.filters import Filters, as_filters
from mmgen.store.models import Corpus, IndexRecord, IndexRow, Item
from mmgen.workspace import Workspace

if TYPE_CHECKING:
    from mmgen.encoders.base import Encoder
    from mmgen.hashing.model import Hasher
    from mmgen.store.db import Store

SEARCH_MODES = ("float", "codes", "rerank")
DEFAULT_RERANK = 100
# rerank mode on flat codes: a Hamming list PRELIST x C long is cut to C by asymmetric scoring first
PRELIST = 10


@dataclass
class Hit:
    """One search result, joined to its SQL item."""

    id: int
    score: float
    modality: str
    text: str | None
    uri: str | None
    meta: dict[str, Any]
    key: str = ""
    corpus: str = ""
    group: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The stable `--json` form of a hit."""
        return {
            "id": self.id,
            "score": round(float(self.score), 6),
            "modality": self.modality,
            "text": self.text,
            "uri": self.uri,
            "meta": self.meta,
            "key": self.key,
            "corpus": self.corpus,
            "group": self.group,
        }


@dataclass
class SearchResult:
    """Hits for one query, with its latency and the id of the recorded prompt."""

    query: dict[str, Any]
    hits: list[Hit] = field(default_factory=list)
    latency_ms: float = 0.0
    prompt_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """`{"query": ..., "hits": [...]}` as documented in the README."""
        return {
            "query": self.query,
            "hits": [h.to_json() for h in self.hits],
            "latency_ms": round(self.latency_ms, 3),
            "prompt_id": self.prompt_id,
        }


class Searcher:
    """An opened index: encoder, FAISS files and store, reused across queries."""

    def __init__(
        self, ws: Workspace, store: Store, index_name: str | None = None, encoder: str | None = None, device: str = "auto"
    ) -> None:
        from mmgen.encoders.factory import load_encoder

        self.ws = ws
        self.store = store
        self.name = pick_index_name(store, index_name)
        with store.session() as s:
            rec = s.scalar(select(IndexRecord).where(IndexRecord.name == self.name))
            if rec is None:
                raise VectorIndexError(f"index {self.name!r} disappeared from the store")
            self.index_id, built_with, checksum = rec.id, rec.encoder, rec.encoder_checksum
        self.folder = IndexFolder.open(ws.index_dir(self.name))
        self.encoder: Encoder = load_encoder(encoder or built_with, device=device, models_dir=ws.models_dir)
        if self.encoder.checksum() != checksum:
            raise ManifestMismatchError(
                f"index {self.name!r} was built with encoder {built_with}, not {self.encoder.name}; "
                f"search it with --encoder {built_with} (or leave --encoder out)"
            )
        self.folder.check(encoder=self.encoder.name, encoder_checksum=checksum, dim=self.encoder.dim)
        self.device = device
        # Open time is when a stale FAISS file (a run killed before its save) catches up with SQL;
        # a search itself only reads.
        self._available = self.modalities()
        for modality in self._available:
            catch_up(self.store, self.index_id, self.folder, modality)
        self._corpora: dict[int, str] = {}
        self._codes_ready: set[str] = set()
        self._hasher: Hasher | None = None

    def modalities(self) -> list[str]:
        """Modalities that have vectors in this index."""
        return [m for m in ("image", "text") if sql_row_state(self.store, self.index_id, m)[0] > 0]

    def _faiss(self, modality: str) -> Any:
        return self.folder.faiss(modality)

    def hasher(self) -> Hasher:
        """The hasher whose codes the index keeps; refuses one retrained (other checksum or width) since."""
        if self._hasher is None:
            from mmgen.hashing.model import load_hasher

            info = self.folder.hash
            if info is None:
                raise ConfigError(
                    f"index {self.name!r} keeps no binary codes, so only --mode float works; add codes with "
                    f"`mmgen train hasher --index {self.name}` and `mmgen index SOURCE --name {self.name} --hash HASHER`"
                )
            hasher = load_hasher(info["name"], self.ws.models_dir)
            if hasher.bits != int(info["bits"]) or hasher.checksum != info["checksum"]:
                raise ManifestMismatchError(
                    f"index {self.name!r} holds {info['bits']}-bit codes of hasher {info['name']!r} "
                    f"(checksum {info['checksum'][:12]}), but that hasher is now {hasher.bits}-bit "
                    f"(checksum {hasher.checksum[:12]}); re-encode with `mmgen index SOURCE --name {self.name} "
                    f"--hash {info['name']}`"
                )
            self._hasher = hasher
        return self._hasher

    def _codes(self, modality: str) -> Any:
        hasher = self.hasher()
        if modality not in self._codes_ready:
            catch_up_codes(self.store, self.index_id, self.folder, modality, hasher)
            self._codes_ready.add(modality)
        return self.folder.codes(modality)

    def encode_queries(self, texts: Sequence[str] | None = None, images: Sequence[str | Path] | None = None) -> np.ndarray:
        """Embed text or image queries with the index's encoder."""
        if texts is not None:
            if any(not t.strip() for t in texts):
                raise ConfigError("empty query text")
            return self.encoder.encode_text(list(texts))
        from mmgen.data.images import load_image

        if "image" not in self.encoder.modalities:
            raise ConfigError(
                f"index {self.name!r} uses the text-only encoder {self.encoder.name}; image queries need a joint "
                "image-text encoder (index with --encoder openclip:... or mmgen:...)"
            )
        return self.encoder.encode_image([load_image(p) for p in images or []])

    def search_vectors(
        self,
        queries: np.ndarray,
        to: str | None = None,
        k: int = 10,
        where: Filters | Mapping[str, Any] | None = None,
        mode: str = "float",
        rerank: int | None = None,
        query_modality: str | None = None,
    ) -> tuple[str, list[list[Hit]]]:
        """Top-k hits per query vector in the `to` modality; codes modes need the queries' modality.

        `where`: Filters from `mmgen.store.filters.parse_where`, or a plain {key: value} dict.
        """
        where = as_filters(where)
        if k < 1:
            raise ConfigError("k must be at least 1")
        if mode not in SEARCH_MODES:
            raise ConfigError(f"--mode must be one of {', '.join(SEARCH_MODES)}, not {mode!r}")
        if rerank is not None and mode != "rerank":
            raise ConfigError(f"--rerank C re-ranks a short list of codes; it does not apply to --mode {mode}")
        if mode != "float" and query_modality not in ("image", "text"):
            raise ConfigError("searching codes needs the modality of the query vectors (image or text)")
        available = self._available  # as at open time, when the FAISS files were caught up
        if not available:
            raise VectorIndexError(f"index {self.name!r} is empty; run `mmgen index SOURCE --name {self.name}`")
        to = to or ("image" if "image" in available else "text")
        if to not in ("image", "text"):
            raise ConfigError(f"--to must be image or text, not {to!r}")
        if to not in available:
            raise ConfigError(f"index {self.name!r} has no {to} vectors (it has: {', '.join(available)})")
        allowed = self._allowed_rows(to, where) if where else None
        if allowed is not None and len(allowed) == 0:
            return to, [[] for _ in range(len(queries))]
        scores, ids = MODES[mode](self, queries, str(query_modality), to, k, allowed, rerank)
        return to, self._join(to, scores, ids)

    def item_vectors(self, modality: str, item_ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of these items in one modality, in the order given (zeros for an item without one)."""
        with self.store.session() as s:
            rows = dict(
                s.execute(
                    select(IndexRow.item_id, IndexRow.row_id).where(
                        IndexRow.index_id == self.index_id, IndexRow.modality == modality,
                        IndexRow.item_id.in_([int(i) for i in item_ids]),
                    )
                ).all()
            )  # fmt: skip
        out = np.zeros((len(item_ids), self.folder.dim), dtype=np.float32)
        have = [n for n, i in enumerate(item_ids) if int(i) in rows]
        if have:
            out[have] = self.folder.vectors(modality).get(np.array([rows[int(item_ids[n])] for n in have], dtype=np.int64))
        return out

    def _allowed_rows(self, modality: str, where: Filters) -> np.ndarray:
        from mmgen.store.filters import filter_items_by_meta

        stmt = (
            select(IndexRow.row_id)
            .join(Item, Item.id == IndexRow.item_id)
            .where(IndexRow.index_id == self.index_id, IndexRow.modality == modality)
        )
        stmt = filter_items_by_meta(stmt, where)
        with self.store.session() as s:
            return np.asarray(s.scalars(stmt).all(), dtype=np.int64)

    def _join(self, modality: str, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
        from mmgen.store.repo import items_for_rows

        with self.store.session() as s:
            items = items_for_rows(s, self.index_id, modality, ids.ravel().tolist())
            if any(item.corpus_id not in self._corpora for item in items.values()):
                self._corpora = {int(i): n for i, n in s.execute(select(Corpus.id, Corpus.name))}
        rows = {rid: (item, self._corpora.get(item.corpus_id, "")) for rid, item in items.items()}
        out: list[list[Hit]] = []
        for qs, qi in zip(scores, ids):
            hits = []
            for score, rid in zip(qs, qi):
                found = rows.get(int(rid))
                if rid < 0 or found is None:  # a row deleted since FAISS was saved is skipped, never guessed
                    continue
                item, corpus = found
                hits.append(
                    Hit(
                        id=item.id,
                        score=float(score),
                        modality=modality,
                        text=item.text,
                        uri=item.uri,
                        meta=dict(item.meta or {}),
                        key=item.key,
                        corpus=corpus,
                        group=item.group_key,
                    )
                )
            out.append(hits)
        return out

    def search(
        self,
        text: str | None = None,
        image: str | Path | None = None,
        to: str | None = None,
        k: int = 10,
        where: Filters | Mapping[str, Any] | None = None,
        record: bool = True,
        mode: str = "float",
        rerank: int | None = None,
    ) -> SearchResult:
        """One query, text or image, recorded in the store (prompt, retrievals, latency)."""
        if (text is None) == (image is None):
            raise ConfigError("give a query text or --image PATH (one of them)")
        started = time.perf_counter()
        where = as_filters(where)
        vec = self.encode_queries(texts=[text] if text is not None else None, images=[image] if image else None)
        query_modality = "text" if text is not None else "image"
        to, hits = self.search_vectors(
            vec, to=to, k=k, where=where, mode=mode, rerank=rerank, query_modality=query_modality
        )
        latency = (time.perf_counter() - started) * 1000
        query = {
            "text": text,
            "image": str(Path(image).resolve()) if image is not None else None,
            "to": to,
            "k": k,
            "where": where.to_json(),
            "index": self.name,
            "encoder": self.encoder.name,
            "mode": mode,
        }
        if mode == "rerank":
            query["rerank"] = max(k, rerank if rerank is not None else DEFAULT_RERANK)
        if mode != "float":
            query["hasher"] = self.hasher().name
        result = SearchResult(query=query, hits=hits[0], latency_ms=latency)
        if record:
            result.prompt_id = self.record(result)
        return result

    def record(self, result: SearchResult, user: str | None = None) -> int:
        """Record a search in the store (prompt, one retrieval per hit, latency); returns the prompt id.

        `user` defaults to the login name of the process."""
        from mmgen.store.repo import record_search

        with self.store.session() as s:
            prompt = record_search(
                s,
                text=result.query["text"],
                image_uri=result.query["image"],
                params={k: v for k, v in result.query.items() if k not in ("text", "image")},
                hits=[(h.id, h.score, h.modality) for h in result.hits],
                latency_ms=result.latency_ms,
                user=user if user is not None else _user(),
            )
            s.commit()
            return int(prompt.id)


# ---- search modes: one small strategy each over the float and binary indexes ------------------
def _float_mode(
    searcher: Searcher, queries: np.ndarray, query_modality: str, to: str, k: int,
    allowed: np.ndarray | None, rerank: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (or the preset's approximate) inner-product top k on the float index."""
    return searcher._faiss(to).search(queries, k, allowed_ids=allowed)  # fmt: skip


def _query_codes(searcher: Searcher, queries: np.ndarray, modality: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The queries' packed codes, and the hasher's real-valued outputs where it has them (the autoencoder)."""
    from mmgen.index.codes import pack_codes

    hasher = searcher.hasher()
    queries32 = np.ascontiguousarray(queries, dtype=np.float32)
    logits = hasher.logits(queries32, modality) if hasher.has_logits else None
    codes = pack_codes(logits > 0) if logits is not None else hasher.encode(queries32, modality)
    return codes, logits


def _codes_mode(
    searcher: Searcher, queries: np.ndarray, query_modality: str, to: str, k: int,
    allowed: np.ndarray | None, rerank: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Hamming top k on the binary index; scores are 1 - 2 * distance / bits."""
    from mmgen.index.codes import code_similarity

    codes, _ = _query_codes(searcher, queries, query_modality)
    dist, ids = searcher._codes(to).search(codes, k, allowed_ids=allowed, device=searcher.device)
    return np.where(ids >= 0, code_similarity(dist, searcher.hasher().bits), 0.0).astype(np.float32), ids  # fmt: skip


def _rerank_mode(
    searcher: Searcher, queries: np.ndarray, query_modality: str, to: str, k: int,
    allowed: np.ndarray | None, rerank: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """A short list of C codes re-scored exactly against the memory-mapped float vectors.

    On the flat preset, with a hasher that has real-valued code units (the autoencoder), the
    short list is the best C of a Hamming list PRELIST x C long under asymmetric scoring (the
    query's real-valued code against the candidates' bits); on graph and IVF presets, and for
    a FAISS baseline (LSH / ITQ / PCA: bits only), it is the Hamming top C.
    """
    depth = max(k, rerank if rerank is not None else DEFAULT_RERANK)
    if depth < 1:
        raise ConfigError("--rerank must be at least 1")
    codes, logits = _query_codes(searcher, queries, query_modality)
    index = searcher._codes(to)
    if not index.slotted or logits is None:  # graph / IVF presets, baselines: the Hamming short list as it comes
        _, short = index.search(codes, depth, allowed_ids=allowed, device=searcher.device)
        return rerank_exact(queries, short, searcher.folder.vectors(to), k)
    from mmgen.index.codes import asymmetric_prune

    _, long = index.search(codes, PRELIST * depth, allowed_ids=allowed, device=searcher.device)
    short = asymmetric_prune(np.tanh(logits), long, index.slot_codes(), depth)
    return rerank_exact(queries, short, searcher.folder.vectors(to), k)


ModeFn = Callable[
    [Searcher, np.ndarray, str, str, int, "np.ndarray | None", "int | None"], tuple[np.ndarray, np.ndarray]
]
MODES: dict[str, ModeFn] = {"float": _float_mode, "codes": _codes_mode, "rerank": _rerank_mode}


def rerank_exact(queries: np.ndarray, short: np.ndarray, vectors: VectorFile, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-score short lists of row ids (-1: none) exactly against memory-mapped float vectors; top k each."""
    scores = np.zeros((len(queries), k), dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for row, (q, cand) in enumerate(zip(np.asarray(queries, dtype=np.float32), short)):
        cand = cand[cand >= 0]
        if len(cand) == 0:
            continue
        exact = vectors.get(cand) @ q
        order = np.argsort(-exact, kind="stable")[:k]
        scores[row, : len(order)], ids[row, : len(order)] = exact[order], cand[order]
    return scores, ids


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
