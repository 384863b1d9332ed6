"""`mmgen index`: records -> (decode, encode) -> vector files + SQL rows -> FAISS.

Incremental: a record is re-embedded only when the content of a modality changed (its own
sha256). Resumable: each batch appends its vectors durably, then commits its items and index
rows in one SQL transaction; FAISS is synced from those two at the end of the run, and again
by whoever next opens a stale index. A run killed at any point therefore loses at most the
batch in flight, and the next run redoes exactly that.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import delete, select

from mmgen.errors import DataError, DiskFullError
from mmgen.catalog import DEFAULT_INDEX, open_index_hasher, open_or_create_index, sql_row_state, sync_index
from mmgen.encoders.batch import TEXT_WINDOW, Embedded, embed_batch, prefill_texts
from mmgen.store.models import Corpus, IndexRecord, IndexRow, Item
from mmgen.workspace import Workspace

if TYPE_CHECKING:
    from PIL import Image

    from mmgen.data.records import Record
    from mmgen.data.sources import Source
    from mmgen.encoders.base import Encoder
    from mmgen.store.db import Store

MAX_REASONS_KEPT = 10_000


@dataclass
class IndexOptions:
    """Settings of one `mmgen index` run."""

    name: str = DEFAULT_INDEX
    encoder: str | None = None  # None: the index's encoder, or the default text encoder for a new index
    preset: str | None = None
    prune: bool = False
    batch_size: int = 128
    image_side: int = 256
    workers: int = 2
    progress: bool = True
    device: str = "auto"
    reembed: bool = False
    hash: str | None = None  # a hasher (`mmgen train hasher`): keep its binary codes beside the float index
    hash_preset: str | None = None  # binary index preset (default binary-flat)
    skip_duplicates: bool = False  # refuse a new item whose image bytes another item of the index already has
    untrusted: bool = False  # decode images within mmgen.data.untrusted's limits (folders from elsewhere)
    shards: int | None = None  # FAISS shard files per modality (row_id % N); None: keep, growing past shard_rows
    shard_rows: int | None = None  # live rows per shard before more shards (None: $MMGEN_SHARD_ROWS or 5M; 0: never)
    merge_ondisk: bool = False  # after the run, merge IVF shards into one on-disk index (mmgen.index.shards)


@dataclass
class IndexReport:
    """What a run did; the CLI prints it and `--json` emits `to_json()`."""

    index: str
    encoder: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    missing: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    failed_count: int = 0
    vectors_added: dict[str, int] = field(default_factory=dict)
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    sync: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    codes: dict[str, int] = field(default_factory=dict)  # codes per modality, when the index has a hasher
    hasher: str | None = None
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # --skip-duplicates: (key, what it copies)

    def fail(self, key: str, reason: str) -> None:
        """Count one failure, keeping its reason."""
        self.failed_count += 1
        if len(self.failed) < MAX_REASONS_KEPT:
            self.failed.append((key, reason))

    def skip(self, reason: str) -> None:
        """Count one record skipped for a reason that is not an error."""
        self.skipped += 1
        self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + 1

    def time(self, stage: str, seconds: float) -> None:
        """Accumulate time spent in one stage."""
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form of the report."""
        return {
            "index": self.index,
            "encoder": self.encoder,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "missing": self.missing,
            "skipped": self.skipped,
            "skipped_reasons": self.skipped_reasons,
            "failed": self.failed_count,
            "failures": [{"key": k, "reason": r} for k, r in self.failed],
            "vectors_added": self.vectors_added,
            "totals": self.totals,
            "sync": self.sync,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "interrupted": self.interrupted,
            "duplicates": [{"key": k, "duplicate_of": of} for k, of in self.duplicates],
            **({"hasher": self.hasher, "codes": self.codes} if self.hasher else {}),
        }


@dataclass
class _Todo:
    """One record that needs work, with the hashes that decide what."""

    record: Record
    item_sha: str
    modality_sha: dict[str, str]
    embed: list[str]
    existing_item: int | None


def sha256_text(text: str) -> str:
    """Content hash of a caption."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _item_sha(record: Record, image_sha: str | None) -> str:
    payload = {"image": image_sha, "text": record.text, "group": record.group, "meta": record.meta, "uri": record.image}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _modality(record: Record) -> str:
    if record.image and record.text is not None:
        return "image+text"
    return "image" if record.image else "text"


class _Prefetcher:
    """Decodes the images of the next batch in threads while the current one is encoded."""

    def __init__(self, workers: int, side: int, untrusted: bool = False) -> None:
        from mmgen.data.images import load_image

        self._load = partial(load_image, untrusted=untrusted)
        self._side = side
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mmgen-decode")

    def submit(self, batch: Sequence[_Todo]) -> list[Future[Image.Image] | None]:
        return [
            self._pool.submit(self._load, t.record.image, self._side) if "image" in t.embed else None for t in batch
        ]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _batches(items: Sequence[_Todo], size: int) -> Iterator[Sequence[_Todo]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Indexer:
    """Runs `mmgen index` for one workspace and one index name."""

    def __init__(self, ws: Workspace, store: Store, encoder: Encoder, options: IndexOptions) -> None:
        self.ws = ws
        self.store = store
        self.encoder = encoder
        self.opts = options
        from mmgen.index.shards import shard_rows_limit

        self._shard_rows = shard_rows_limit(options.shard_rows)  # a bad $MMGEN_SHARD_ROWS fails before any work
        self._synthetic = False  # set per source: its items are generated ones
        self.index_id, self.folder = open_or_create_index(
            ws, store, options.name, encoder, options.preset, reembed=options.reembed, shards=options.shards
        )
        self.report = IndexReport(index=options.name, encoder=encoder.name)
        self._text_cache: dict[str, np.ndarray] = {}
        self.hasher = open_index_hasher(ws, store, self.index_id, self.folder, options.hash, options.hash_preset)
        self.report.hasher = self.hasher.name if self.hasher is not None else None

    # ---- planning ----------------------------------------------------------------------
    def _plan(self, source: Source, corpus_id: int) -> tuple[list[_Todo], set[str]]:
        from mmgen.data.checksums import file_sha256

        with self.store.session() as s:
            items = {key: (iid, sha) for iid, key, sha in s.execute(
                select(Item.id, Item.key, Item.sha256).where(Item.corpus_id == corpus_id)
            )}
            rows: dict[tuple[int, str], str] = {
                (iid, mod): sha
                for iid, mod, sha in s.execute(
                    select(IndexRow.item_id, IndexRow.modality, IndexRow.sha256)
                    .join(Item, Item.id == IndexRow.item_id)
                    .where(IndexRow.index_id == self.index_id, Item.corpus_id == corpus_id)
                )
            }
        todo: list[_Todo] = []
        seen: set[str] = set()
        images = self._known_images() if self.opts.skip_duplicates else {}
        started = time.perf_counter()
        for record in source.records():
            if record.key in seen:
                self.report.fail(record.key, "duplicate key in source (first occurrence kept)")
                continue
            seen.add(record.key)
            if record.error:
                self.report.fail(record.key, record.error)
                continue
            if not record.image and record.text is None:
                self.report.fail(record.key, "record has neither image nor text")
                continue
            wanted = [m for m in ("image", "text") if (record.image if m == "image" else record.text is not None)]
            embed_modalities = [m for m in wanted if m in self.encoder.modalities]
            for m in wanted:
                if m not in self.encoder.modalities:
                    self.report.skip(f"{m}: encoder {self.encoder.name} does not embed {m}s")
            if not embed_modalities:
                continue
            modality_sha: dict[str, str] = {}
            try:
                if record.image:
                    modality_sha["image"] = file_sha256(record.image)
            except (DataError, OSError) as exc:
                self.report.fail(record.key, f"image: {exc}")
                if "text" not in embed_modalities:
                    continue
                embed_modalities = ["text"]
            if record.text is not None:
                modality_sha["text"] = sha256_text(record.text)
            item_sha = _item_sha(record, modality_sha.get("image"))
            existing = items.get(record.key)
            item_id = existing[0] if existing else None
            if images and item_id is None and modality_sha.get("image") in images:
                self._refuse_duplicate(record.key, images[modality_sha["image"]])
                continue
            if self.opts.skip_duplicates and "image" in modality_sha:
                images.setdefault(modality_sha["image"], f"{source.corpus}:{record.key}")
            embed = [m for m in embed_modalities if item_id is None or rows.get((item_id, m)) != modality_sha[m]]
            if existing and existing[1] == item_sha and not embed:
                self.report.unchanged += 1
                continue
            todo.append(_Todo(record, item_sha, modality_sha, embed, item_id))
        self.report.time("hash", time.perf_counter() - started)
        gone = set(items) - seen
        return todo, gone

    def _known_images(self) -> dict[str, str]:
        """Image content hash -> `corpus:key` of the item of this index that has it (--skip-duplicates)."""
        with self.store.session() as s:
            rows = s.execute(
                select(IndexRow.sha256, Corpus.name, Item.key)
                .join(Item, Item.id == IndexRow.item_id).join(Corpus, Corpus.id == Item.corpus_id)
                .where(IndexRow.index_id == self.index_id, IndexRow.modality == "image")
            )  # fmt: skip
            return {sha: f"{corpus}:{key}" for sha, corpus, key in rows}

    def _refuse_duplicate(self, key: str, of: str) -> None:
        self.report.skip("exact duplicate of an indexed image (--skip-duplicates)")
        if len(self.report.duplicates) < MAX_REASONS_KEPT:
            self.report.duplicates.append((key, of))

    # ---- running -----------------------------------------------------------------------
    def run(self, sources: Sequence[Source]) -> IndexReport:
        """Index every source; returns the report (also on Ctrl-C, marked interrupted).

        A full disk stops the run with DiskFullError: every batch before it is committed, and the
        FAISS caches are left for the next run (or search) to sync, since saving them would fail too.
        """
        with self.folder.lock():
            disk_full = False
            try:
                for source in sources:
                    self._run_source(source)
            except KeyboardInterrupt:
                self.report.interrupted = True
            except DiskFullError:
                disk_full = True
                raise
            finally:
                if not disk_full:
                    self._sync()
        return self.report

    def _sync(self) -> None:
        started = time.perf_counter()
        resharded = self._auto_shard()
        self.report.sync = sync_index(self.store, self.index_id, self.folder, self.hasher)
        if resharded:
            self.report.sync["shards"] = resharded
        if self.opts.merge_ondisk:
            for modality in self.folder.modalities():
                self.folder.merge_ondisk(modality)
        self.report.time("faiss", time.perf_counter() - started)
        self.report.totals = {m: self.folder.faiss(m).count for m in self.folder.modalities()}
        if self.hasher is not None:
            self.report.codes = {m: self.folder.codes(m).count for m in self.folder.modalities()}

    def _auto_shard(self) -> str | None:
        """Without --shards: past the rows-per-shard limit, split the FAISS files into more shards (never fewer)."""
        from mmgen.index.shards import auto_shard_count

        if self.opts.shards is not None:
            return None
        limit = self._shard_rows
        rows = max(sql_row_state(self.store, self.index_id, m)[0] for m in ("image", "text"))
        want = auto_shard_count(rows, self.folder.shards, limit)
        if want == self.folder.shards:
            return None
        self.folder.set_shards(want)
        return f"split into {want} shard files: {rows:,} rows, past {limit:,} per shard"

    def _corpus_id(self, source: Source) -> int:
        from mmgen.store.repo import get_or_create_corpus

        with self.store.session(write=True) as s:
            corpus = get_or_create_corpus(s, source.corpus, source.spec, source.licence)
            s.commit()
            return corpus.id

    def _run_source(self, source: Source) -> None:
        corpus_id = self._corpus_id(source)
        self._synthetic = source.synthetic  # generated images (`mmgen index outputs`) are marked as such
        todo, gone = self._plan(source, corpus_id)
        if gone:
            if self.opts.prune:
                self._prune(corpus_id, gone)
            else:
                self.report.missing += len(gone)
        if todo:
            self._embed(corpus_id, todo, source)

    def _embed(self, corpus_id: int, todo: list[_Todo], source: Source) -> None:
        """Decode, encode and write the plan's records (the engine's part; mmgen.engines has others)."""
        bar = _progress(len(todo), f"{source.corpus}", self.opts.progress)
        prefetch = _Prefetcher(self.opts.workers, self.opts.image_side, self.opts.untrusted)
        try:
            batches = list(_batches(todo, self.opts.batch_size))
            per_window = max(1, TEXT_WINDOW // self.opts.batch_size)
            pending = prefetch.submit(batches[0])
            for i, batch in enumerate(batches):
                if i % per_window == 0:  # the texts of this batch and the next per_window - 1 in one sorted pass
                    texts = [t.record.text for b in batches[i : i + per_window] for t in b if "text" in t.embed]
                    self.report.time("encode", prefill_texts(self.encoder, texts, self._text_cache))
                futures = pending
                if i + 1 < len(batches):
                    pending = prefetch.submit(batches[i + 1])
                self._run_batch(corpus_id, batch, futures)
                bar(len(batch))
        finally:
            prefetch.close()
            bar(0, close=True)

    def _run_batch(self, corpus_id: int, batch: Sequence[_Todo], futures: list[Future[Image.Image] | None]) -> None:
        embed = [list(t.embed) for t in batch]
        loaders = [fut.result if fut is not None else None for fut in futures]
        vectors = embed_batch(self.encoder, embed, [t.record.text for t in batch], loaders, self._text_cache)
        self._write(corpus_id, batch, embed, vectors)

    def _write(self, corpus_id: int, batch: Sequence[_Todo], embed: list[list[str]], vectors: Embedded) -> None:
        """Count the batch's failures and timings, append its vectors durably, then commit it."""
        for j, reason in vectors.failures:
            self.report.fail(batch[j].record.key, reason)
        for stage, seconds in vectors.timings.items():
            self.report.time(stage, seconds)
        started = time.perf_counter()
        slots: dict[tuple[int, str], int] = {}
        for modality, (owners, vecs) in vectors.rows.items():
            for j, slot in zip(owners, self.folder.vectors(modality).append(vecs)):
                slots[(j, modality)] = int(slot)
        self._commit(corpus_id, batch, embed, slots)
        self.report.time("write", time.perf_counter() - started)

    def _commit(
        self, corpus_id: int, batch: Sequence[_Todo], embed: list[list[str]], slots: dict[tuple[int, str], int]
    ) -> None:
        """One transaction per batch (a writer from its first read): upsert the items, replace their rows."""
        from mmgen.store.ingest import BatchItem, write_batch

        writes = []
        for j, todo in enumerate(batch):
            done = [m for m in embed[j] if (j, m) in slots]
            if todo.existing_item is None and not done:
                continue  # nothing usable yet: no item row, so the next run retries it
            rec = todo.record
            fields = dict(modality=_modality(rec), uri=rec.image, text=rec.text, sha256=todo.item_sha,
                          group_key=rec.group, meta=rec.meta, synthetic=self._synthetic)  # fmt: skip
            rows = {m: (slots[(j, m)], todo.modality_sha[m]) for m in done}
            writes.append(BatchItem(key=rec.key, fields=fields, existing=todo.existing_item, rows=rows))
        with self.store.session(write=True) as s:
            written = write_batch(s, self.index_id, corpus_id, writes)
            s.commit()
        self.report.added += written.added
        self.report.updated += written.updated
        for modality, n in written.vectors.items():
            self.report.vectors_added[modality] = self.report.vectors_added.get(modality, 0) + n

    def _prune(self, corpus_id: int, keys: set[str]) -> None:
        with self.store.session(write=True) as s:
            ids = s.scalars(select(Item.id).where(Item.corpus_id == corpus_id, Item.key.in_(list(keys)))).all()
            for chunk in range(0, len(ids), 500):
                part = ids[chunk : chunk + 500]
                s.execute(delete(IndexRow).where(IndexRow.index_id == self.index_id, IndexRow.item_id.in_(part)))
                # An item stays while another index still uses it.
                still_used = set(s.scalars(select(IndexRow.item_id).where(IndexRow.item_id.in_(part))).all())
                s.execute(delete(Item).where(Item.id.in_([i for i in part if i not in still_used])))
            s.commit()
        self.report.removed += len(ids)


def _progress(total: int, desc: str, enabled: bool) -> Callable[..., None]:
    """A tqdm bar on stderr (items/s and ETA), or a no-op."""
    if not enabled:
        return lambda n, close=False: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, smoothing=0.1)

    def update(n: int, close: bool = False) -> None:
        if n:
            bar.update(n)
        if close:
            bar.close()

    return update


def index_sources(
    spec: str, ws: Workspace, options: IndexOptions, data_dir: Any = None, indexer: Callable[..., Indexer] = Indexer
) -> IndexReport:
    """Open the store, encoder and sources, and run the indexer (`indexer`: another engine's, see mmgen.engines)."""
    from mmgen.data.sources import open_sources
    from mmgen.encoders.factory import DEFAULT_TEXT_ENCODER, load_encoder
    from mmgen.records.synthetic import OUTPUTS_SOURCE, outputs_source
    from mmgen.store.db import open_store

    store = open_store(ws.db_url)
    try:
        encoder_name = options.encoder
        if encoder_name is None:
            with store.session() as s:
                encoder_name = s.scalar(select(IndexRecord.encoder).where(IndexRecord.name == options.name))
        sources = [outputs_source(ws)] if spec.strip() == OUTPUTS_SOURCE else open_sources(spec, data_dir)
        encoder = load_encoder(encoder_name or DEFAULT_TEXT_ENCODER, device=options.device, models_dir=ws.models_dir)
        return indexer(ws, store, encoder, options).run(sources)
    finally:
        store.close()
