"""`mmgen search`: encode a query, search FAISS, join the hits to SQL, record the search."""

from __future__ import annotations

import getpass
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from mmgen.errors import ConfigError, ManifestMismatchError, VectorIndexError
from mmgen.index import IndexFolder
from mmgen.indexer import DEFAULT_INDEX, live_row_ids, sql_fingerprint
from mmgen.store.models import Corpus, IndexRecord, IndexRow, Item
from mmgen.workspace import Workspace

if TYPE_CHECKING:
    from mmgen.encoders.base import Encoder
    from mmgen.store.db import Store


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


def pick_index_name(store: Store, name: str | None) -> str:
    """The given index, else `default`, else the only index; errors list what exists."""
    with store.session() as s:
        names = list(s.scalars(select(IndexRecord.name).order_by(IndexRecord.name)))
    if not names:
        raise VectorIndexError("the workspace has no index yet; build one with `mmgen index SOURCE`")
    if name is not None:
        if name not in names:
            raise VectorIndexError(f"no index named {name!r}; indexes here: {', '.join(names)}")
        return name
    if DEFAULT_INDEX in names:
        return DEFAULT_INDEX
    if len(names) == 1:
        return names[0]
    raise ConfigError(f"several indexes here ({', '.join(names)}); choose one with --index")


def parse_where(pairs: Sequence[str]) -> dict[str, str]:
    """`key=value` strings to a dict; the values stay data (they are bound as SQL parameters)."""
    where: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--where takes key=value, not {pair!r}")
        where[key.strip()] = value
    return where


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
        self._ready: set[str] = set()

    def modalities(self) -> list[str]:
        """Modalities that have vectors in this index."""
        return [m for m in ("image", "text") if sql_fingerprint(self.store, self.index_id, m)[0] > 0]

    def _faiss(self, modality: str) -> Any:
        if modality not in self._ready:
            if sql_fingerprint(self.store, self.index_id, modality) != self.folder.fingerprint(modality):
                # A run was killed before its FAISS save: catch up from the vector file.
                self.folder.sync(modality, live_row_ids(self.store, self.index_id, modality))
                with self.folder.lock(wait=False) as got:
                    if got:
                        self.folder.save(modality)
            self._ready.add(modality)
        return self.folder.faiss(modality)

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
        self, queries: np.ndarray, to: str | None = None, k: int = 10, where: dict[str, str] | None = None
    ) -> tuple[str, list[list[Hit]]]:
        """Top-k hits per query vector in the `to` modality."""
        if k < 1:
            raise ConfigError("k must be at least 1")
        available = self.modalities()
        if not available:
            raise VectorIndexError(f"index {self.name!r} is empty; run `mmgen index SOURCE --name {self.name}`")
        to = to or ("image" if "image" in available else "text")
        if to not in ("image", "text"):
            raise ConfigError(f"--to must be image or text, not {to!r}")
        if to not in available:
            raise ConfigError(f"index {self.name!r} has no {to} vectors (it has: {', '.join(available)})")
        index = self._faiss(to)
        allowed = self._allowed_rows(to, where) if where else None
        if allowed is not None and len(allowed) == 0:
            return to, [[] for _ in range(len(queries))]
        scores, ids = index.search(queries, k, allowed_ids=allowed)
        return to, self._join(to, scores, ids)

    def _allowed_rows(self, modality: str, where: dict[str, str]) -> np.ndarray:
        from mmgen.store.repo import filter_items_by_meta

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
            corpora = {int(i): n for i, n in s.execute(select(Corpus.id, Corpus.name))}
        rows = {rid: (item, corpora.get(item.corpus_id, "")) for rid, item in items.items()}
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
        where: dict[str, str] | None = None,
        record: bool = True,
    ) -> SearchResult:
        """One query, text or image, recorded in the store (prompt, retrievals, latency)."""
        if (text is None) == (image is None):
            raise ConfigError("give a query text or --image PATH (one of them)")
        started = time.perf_counter()
        vec = self.encode_queries(texts=[text] if text is not None else None, images=[image] if image else None)
        to, hits = self.search_vectors(vec, to=to, k=k, where=where)
        latency = (time.perf_counter() - started) * 1000
        query = {
            "text": text,
            "image": str(Path(image).resolve()) if image is not None else None,
            "to": to,
            "k": k,
            "where": where or {},
            "index": self.name,
            "encoder": self.encoder.name,
        }
        result = SearchResult(query=query, hits=hits[0], latency_ms=latency)
        if record:
            result.prompt_id = self._record(result)
        return result

    def _record(self, result: SearchResult) -> int:
        from mmgen.store.repo import record_search

        with self.store.session() as s:
            prompt = record_search(
                s,
                text=result.query["text"],
                image_uri=result.query["image"],
                params={k: v for k, v in result.query.items() if k not in ("text", "image")},
                hits=[(h.id, h.score, h.modality) for h in result.hits],
                latency_ms=result.latency_ms,
                user=_user(),
            )
            s.commit()
            return int(prompt.id)


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
