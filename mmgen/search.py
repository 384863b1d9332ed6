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

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from mmgen.catalog import catch_up, catch_up_codes, pick_index_name, sql_row_state
from mmgen.errors import ConfigError, ManifestMismatchError, VectorIndexError
from mmgen.hybrid import Retrieval
from mmgen.index import IndexFolder
from mmgen.store.filters import Condition, Filters, as_filters
from mmgen.store.hotpath import HitRow, QueryPath
from mmgen.store.models import Corpus, IndexRecord, IndexRow, Item
from mmgen.store.repo import login_user
from mmgen.store.writer import RecordWriter, shared_writer
from mmgen.versions import find_checksum, kept_version
from mmgen.workspace import Workspace

if TYPE_CHECKING:
    from sqlalchemy.engine import Row

    from mmgen.encoders.base import Encoder
    from mmgen.hashing.model import Hasher
    from mmgen.store.db import Store

from mmgen.search_modes import DEFAULT_RERANK, MODES, PRELIST, SEARCH_MODES, rerank_exact  # noqa: F401 (re-exported)
from mmgen.search_results import Hit, SearchResult  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# How long a search trusts its last look for synthetic items in the index (a server stays up while
# `mmgen index outputs` adds some).
SYNTHETIC_CHECK_S = 2.0


class Searcher:
    """An opened index: encoder, FAISS files and store, reused across queries."""

    def __init__(
        self, ws: Workspace, store: Store, index_name: str | None = None, encoder: str | None = None,
        device: str = "auto", background_records: bool = True,
    ) -> None:  # fmt: skip
        """`background_records` (default): `search` answers first and a writer thread records it after, in
        order (reading the result's `prompt_id` waits for its record; `flush()` waits for every record, and
        so does the interpreter's exit). False: each search is recorded before `search` returns, and a store
        that cannot record raises there (the CLI, which prints the prompt id at once)."""
        from mmgen.encoders.factory import load_encoder

        self.ws = ws
        self.store = store
        self.queries = QueryPath(store.engine)  # the join and record of every search (raw sqlite3 on SQLite)
        self.name = pick_index_name(store, index_name)
        with store.session() as s:
            rec = s.scalar(select(IndexRecord).where(IndexRecord.name == self.name))
            if rec is None:
                raise VectorIndexError(f"index {self.name!r} disappeared from the store")
            self.index_id, built_with, checksum = rec.id, rec.encoder, rec.encoder_checksum
        self.folder = IndexFolder.open(ws.index_dir(self.name))
        self.encoder: Encoder = load_encoder(encoder or built_with, device=device, models_dir=ws.models_dir)
        if self.encoder.checksum() != checksum and encoder is None:
            kept = kept_version(ws.models_dir, built_with, checksum)  # retrained since: its older version
            if kept is not None:
                self.encoder = load_encoder(kept, device=device, models_dir=ws.models_dir)
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
        self._merged: dict[str, Any] = {}
        for modality in self._available:
            merged = self._fresh_merge(modality)
            if merged is not None:  # memory-mapped lists: the shards are never loaded into RAM
                self._merged[modality] = merged
            else:
                catch_up(self.store, self.index_id, self.folder, modality)
        self._corpora: dict[int, str] = {}
        self._codes_ready: set[str] = set()
        self._hasher: Hasher | None = None
        self._synthetic: tuple[float, bool] | None = None
        self.writer: RecordWriter | None = None  # the process's writer, taken by the first background record
        self._background = background_records

    def flush(self) -> None:
        """Wait until every search recorded in the background is written (a no-op without a writer)."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Wait for what is queued; searches after this record before returning. (The writer thread is the
        process's, shared by every Searcher, and stays.)"""
        self._background = False
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.flush()

    def modalities(self) -> list[str]:
        """Modalities that have vectors in this index."""
        return [m for m in ("image", "text") if sql_row_state(self.store, self.index_id, m)[0] > 0]

    def _faiss(self, modality: str) -> Any:
        merged = self._merged.get(modality)
        return merged if merged is not None else self.folder.faiss(modality)

    def _fresh_merge(self, modality: str) -> Any:
        """The index's on-disk merge of `modality` (`mmgen index --merge-ondisk`) when it holds exactly SQL's live rows."""
        info = self.folder.manifest["modalities"].get(modality, {}).get("merged")
        if info is None or (int(info["count"]), int(info["max_row_id"])) != sql_row_state(self.store, self.index_id, modality):
            return None
        try:
            return self.folder.load_merged(modality)
        except VectorIndexError as exc:  # stale against the FAISS files, or its files gone: the shards answer
            log.info("index %s %s: not using the on-disk merge: %s", self.name, modality, exc)
            return None

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
            kept = find_checksum(self.ws.models_dir, info["name"], info["checksum"]) if "@" not in info["name"] else None
            if hasher.checksum != info["checksum"] and kept is not None:  # retrained since: its kept version
                hasher = load_hasher(f"{info['name']}@{kept.name}", self.ws.models_dir)
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
        with_synthetic: bool = False,
    ) -> tuple[str, list[list[Hit]]]:
        """Top-k hits per query vector in the `to` modality; codes modes need the queries' modality.

        `where`: Filters from `mmgen.store.filters.parse_where`, or a plain {key: value} dict.
        Synthetic items (`mmgen index outputs`) are left out unless `with_synthetic`.
        """
        where = self.real_only(as_filters(where), with_synthetic)
        if k < 1:
            raise ConfigError("k must be at least 1")
        if mode not in SEARCH_MODES:
            raise ConfigError(f"--mode must be one of {', '.join(SEARCH_MODES)}, not {mode!r}")
        if rerank is not None and mode != "rerank":
            raise ConfigError(f"--rerank C re-ranks a short list of codes; it does not apply to --mode {mode}")
        if mode != "float" and query_modality not in ("image", "text"):
            raise ConfigError("searching codes needs the modality of the query vectors (image or text)")
        to = self.target(to)
        allowed = self._allowed_rows(to, where) if where else None
        if allowed is not None and len(allowed) == 0:
            return to, [[] for _ in range(len(queries))]
        scores, ids = MODES[mode](self, queries, str(query_modality), to, k, allowed, rerank)
        return to, self._join(to, scores, ids)

    def target(self, to: str | None) -> str:
        """The modality searched: `to`, checked against the index, or image where it has images, else text."""
        available = self._available  # as at open time, when the FAISS files were caught up
        if not available:
            raise VectorIndexError(f"index {self.name!r} is empty; run `mmgen index SOURCE --name {self.name}`")
        to = to or ("image" if "image" in available else "text")
        if to not in ("image", "text"):
            raise ConfigError(f"--to must be image or text, not {to!r}")
        if to not in available:
            raise ConfigError(f"index {self.name!r} has no {to} vectors (it has: {', '.join(available)})")
        return to

    def hits_for_items(self, modality: str, found: Sequence[tuple[int, float]]) -> list[Hit]:
        """Hits for (item id, score) pairs in the order given (items deleted meanwhile are skipped)."""
        ids = [int(i) for i, _ in found]
        with self.store.session() as s:
            items = {int(it.id): it for it in s.scalars(select(Item).where(Item.id.in_(ids)))}
            if any(it.corpus_id not in self._corpora for it in items.values()):
                self._corpora = {int(i): n for i, n in s.execute(select(Corpus.id, Corpus.name))}
        return [self._hit(items[i], score, modality) for i, score in found if i in items]

    def _hit(self, item: Item | HitRow | Row[Any], score: float, modality: str) -> Hit:
        """A hit from an item, or from a row of its fields (`mmgen.store.repo.hit_rows`)."""
        return Hit(id=item.id, score=float(score), modality=modality, text=item.text, uri=item.uri,
                   meta=dict(item.meta or {}), key=item.key, corpus=self._corpora.get(item.corpus_id, ""),
                   group=item.group_key)  # fmt: skip

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
        items = self.queries.hit_rows(self.index_id, modality, ids.ravel().tolist())
        if any(item.corpus_id not in self._corpora for item in items.values()):
            with self.store.session() as s:
                self._corpora = {int(i): n for i, n in s.execute(select(Corpus.id, Corpus.name))}
        out: list[list[Hit]] = []
        for qs, qi in zip(scores, ids):
            # a row deleted since FAISS was saved is skipped, never guessed
            out.append([self._hit(items[int(r)], sc, modality) for sc, r in zip(qs, qi) if r >= 0 and int(r) in items])
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
        retrieval: Retrieval | None = None,
        group: bool = False,
        dedup: float | None = None,
        with_synthetic: bool = False,
    ) -> SearchResult:
        """One query, text or image, recorded in the store (prompt, retrievals, latency).

        `retrieval`: vector (default), keyword or hybrid (`mmgen.hybrid.Retrieval`); `group` folds hits of
        one concept group into one; `dedup` drops a hit whose cosine to a better-ranked kept hit is at
        least this threshold."""
        if (text is None) == (image is None):
            raise ConfigError("give a query text or --image PATH (one of them)")
        started = time.perf_counter()
        where = as_filters(where)
        how = (retrieval or Retrieval()).check()
        vec = None
        if how.kind != "keyword":
            vec = self.encode_queries(texts=[text] if text is not None else None, images=[image] if image else None)
        to, hits = self.find(vec, text, to=to, k=k, where=where, mode=mode, rerank=rerank,
                             query_modality="text" if text is not None else "image", retrieval=how, group=group,
                             dedup=dedup, with_synthetic=with_synthetic)  # fmt: skip
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
            **self.describe(how, mode, k, rerank, group, dedup),
            **({"with_synthetic": True} if with_synthetic else {}),
        }
        result = SearchResult(query=query, hits=hits, latency_ms=latency)
        if record and self._background:  # answered now, recorded by the writer thread
            result._written = threading.Event()
            self._writer().submit(self._record_into, result)
        elif record:
            result.prompt_id = self.record(result)
        return result

    def _writer(self) -> RecordWriter:
        if self.writer is None:
            self.writer = shared_writer()
        return self.writer

    def _record_into(self, result: SearchResult) -> None:
        try:
            result.prompt_id = self.record(result)
        finally:
            assert result._written is not None
            result._written.set()  # a failed record leaves prompt_id None (the writer logs it)

    def real_only(self, where: Filters, with_synthetic: bool) -> Filters:
        """`where`, plus `synthetic=false` when this index holds synthetic items and they are not wanted."""
        if with_synthetic or any(c.key == "synthetic" for c in where.conditions) or not self.has_synthetic():
            return where
        return Filters((*where.conditions, Condition("synthetic", "=", "false")))

    def has_synthetic(self) -> bool:
        """Whether the index holds rows of synthetic items (checked at most once every SYNTHETIC_CHECK_S)."""
        now = time.monotonic()
        if self._synthetic is None or now - self._synthetic[0] > SYNTHETIC_CHECK_S:
            with self.store.session() as s:
                found = s.scalar(
                    select(IndexRow.id).join(Item, Item.id == IndexRow.item_id)
                    .where(IndexRow.index_id == self.index_id, Item.synthetic.is_(True)).limit(1)
                )  # fmt: skip
            self._synthetic = (now, found is not None)
        return self._synthetic[1]

    def describe(
        self, how: Retrieval, mode: str, k: int, rerank: int | None, group: bool, dedup: float | None
    ) -> dict[str, Any]:
        """The query fields beyond the basic ones, as recorded and shown by `--json`."""
        out: dict[str, Any] = {}
        if mode == "rerank":
            out["rerank"] = max(k, rerank if rerank is not None else DEFAULT_RERANK)
        if mode != "float":
            out["hasher"] = self.hasher().name
        if how.kind != "vector":
            out.update(how.to_json())
        if group:
            out["group"] = True
        if dedup is not None:
            out["dedup"] = dedup
        return out

    def find(
        self,
        vec: np.ndarray | None,
        text: str | None,
        to: str | None = None,
        k: int = 10,
        where: Filters | Mapping[str, Any] | None = None,
        mode: str = "float",
        rerank: int | None = None,
        query_modality: str | None = None,
        retrieval: Retrieval | None = None,
        group: bool = False,
        dedup: float | None = None,
        with_synthetic: bool = False,
    ) -> tuple[str, list[Hit]]:
        """Hits of one query: its vector `vec` (1, d) and/or its `text`, by vector, keyword or hybrid retrieval.

        Synthetic items (`mmgen index outputs`) are left out unless `with_synthetic`."""
        from mmgen.hybrid import fuse, group_depth, keyword_hits

        how = (retrieval or Retrieval()).check()
        where = self.real_only(as_filters(where), with_synthetic)
        if k < 1:
            raise ConfigError("k must be at least 1")
        if how.kind != "vector" and not (text and text.strip()):
            raise ConfigError(f"{how.kind} search needs a query text (keywords cannot come from an image)")
        if how.kind == "keyword" and (mode != "float" or rerank is not None):
            raise ConfigError("--mode and --rerank choose the vector search; a --keyword search has none")
        if dedup is not None and not 0.0 < dedup <= 1.0:
            raise ConfigError(f"--dedup threshold must be in (0, 1], not {dedup}")
        want = group_depth(k) if group else k
        if dedup is not None:
            want = min(1000, 3 * want)
        to = self.target(to)
        depth = how.depth_for(want) if how.kind == "hybrid" else want
        vector: list[Hit] = []
        if how.kind != "keyword":
            assert vec is not None
            # `where` holds synthetic=false already unless they are wanted
            _, (vector,) = self.search_vectors(vec, to=to, k=depth, where=where, mode=mode, rerank=rerank,
                                               query_modality=query_modality, with_synthetic=True)  # fmt: skip
        hits = vector
        if how.kind != "vector":
            keyword = keyword_hits(self, str(text), to, depth, where, how.syntax)
            hits = keyword if how.kind == "keyword" else fuse(vector, keyword, how, want)
        if dedup is not None:
            from mmgen.dedup import collapse

            hits = [hits[i] for i in collapse(self.item_vectors(to, [h.id for h in hits]), dedup)]
        if group:
            from mmgen.hybrid import group_hits

            hits = group_hits(hits, k)
        return to, hits[:k]

    def record(self, result: SearchResult, user: str | None = None) -> int:
        """Record a search in the store (prompt, one retrieval per hit, latency); returns the prompt id.

        `user` defaults to the login name of the process."""
        return self.queries.record_search(
            text=result.query["text"],
            image_uri=result.query["image"],
            params={k: v for k, v in result.query.items() if k not in ("text", "image")},
            hits=[(h.id, h.score, h.modality) for h in result.hits],
            latency_ms=result.latency_ms,
            user=user if user is not None else login_user(),
        )
