"""`mmgen serve`: one process that keeps each index's encoder, FAISS files and store open and answers
many queries over HTTP.

Routes (JSON in, JSON out; a bad request gets a 4xx with `{"error": "..."}`):
- clip-retrieval's back-end interface, so its unmodified `ClipClient` works:
  `POST /knn-service`, `POST /metadata`, `GET /indices-list`, `GET /image/{id}?size=N`;
- mmgen's own: `POST /api/search` (the CLI's `--json` shape), `POST /api/caption`, `POST /api/generate`
  (`mmgen.serve.makers`), `GET /api/outputs/{id}`, `GET /api/items/{id}`, `GET /api/indexes`, `GET /healthz`;
  the record (`mmgen.serve.history_routes`): `GET /api/history`, `GET /api/prompts/{id}`,
  `POST /api/outputs/{id}/rate`, `GET /api/me`; tokens carry a role (`mmgen.serve.access`);
- `/`: the search page (static HTML and JS, no build step).

Each index's `Searcher` is opened once. Before a query (at most once per `refresh_s`, 1 s) the server
compares SQL's row state of the index with the one the searcher opened at; when `mmgen index` has
committed more rows since, it reopens the searcher, which catches the FAISS files up from the vector files. Rows are committed
only after their vectors are written and fsynced, so a half-written batch is never served.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.errors import ConfigError, MmgenError, VectorIndexError
from mmgen.serve.access import DEFAULT_CALLER, Caller, parse_token
from mmgen.store.writer import RecordWriter

if TYPE_CHECKING:
    from mmgen.search import Searcher
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace

DEDUP_COSINE = 0.94  # clip-retrieval's `deduplicate`: a hit this close to a higher-ranked one is dropped
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_K = 1000
REFRESH_S = 1.0  # the row-state check costs a COUNT over the index's rows (~25 ms at 87k): once a second at most
THUMB_DEFAULT = 256
STATIC = Path(__file__).resolve().parent / "static"
# clip-retrieval fields mmgen has no model for: accepted and ignored (documented in the README).
IGNORED_FIELDS = ("use_mclip", "use_safety_model", "use_violence_detector", "aesthetic_score", "aesthetic_weight")


class HTTPError(Exception):
    """A request the server refuses: status code and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ServerConfig:
    """How `mmgen serve` was started."""

    token: str | list[str] | None = None  # "SECRET", "NAME:SECRET" or "NAME:SECRET:ROLE" (mmgen.serve.access)
    allow_remote_urls: bool = False
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    device: str = "auto"
    refresh_s: float = REFRESH_S  # how often a query checks SQL for rows `mmgen index` added meanwhile
    background_records: bool = True  # /knn-service: record after answering, in a writer thread

    def __post_init__(self) -> None:
        self.callers()  # a token with an unknown role fails here, when the server is set up

    def callers(self) -> dict[str, Caller]:
        """Secret -> the caller (user recorded with its requests, and role) of each token."""
        given = [self.token] if isinstance(self.token, str) else list(self.token or [])
        return dict(parse_token(value) for value in given)

    def caller_of(self, authorization: str) -> Caller | None:
        """The caller of an `Authorization` header; None when it matches no token (every token is compared)."""
        found = None
        for secret, caller in self.callers().items():
            if hmac.compare_digest(authorization.encode(), f"Bearer {secret}".encode()):
                found = caller
        return found


@dataclass
class _Open:
    searcher: Searcher
    state: tuple[tuple[int, int], ...]
    checked: float = 0.0  # time.monotonic() of the last row-state check
    lock: threading.Lock = field(default_factory=threading.Lock)


class Service:
    """The state behind the routes: the workspace's store and one open searcher per index."""

    def __init__(self, ws: Workspace, store: Store, config: ServerConfig) -> None:
        self.ws = ws
        self.store = store
        self.config = config
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()
        self.writer = RecordWriter() if config.background_records else None  # mmgen/store/writer.py

    # ---- indexes -----------------------------------------------------------------------
    def index_names(self) -> list[str]:
        """Every index of the store, sorted."""
        from sqlalchemy import select

        from mmgen.store.models import IndexRecord

        with self.store.session() as s:
            return list(s.scalars(select(IndexRecord.name).order_by(IndexRecord.name)))

    def searcher(self, name: str | None) -> _Open:
        """The open searcher of an index (the default one when `name` is None), reopened if SQL moved on."""
        from mmgen.catalog import pick_index_name, sql_row_state
        from mmgen.search import Searcher

        try:
            name = pick_index_name(self.store, name or None)
        except VectorIndexError as exc:
            raise HTTPError(404, str(exc)) from exc
        with self._lock:
            current = self._open.get(name)
            index_id = current.searcher.index_id if current else None
            if current is not None and index_id is not None:
                now = time.monotonic()
                if now - current.checked < self.config.refresh_s:
                    return current
                state = tuple(sql_row_state(self.store, index_id, m) for m in ("image", "text"))
                if state == current.state:
                    current.checked = now
                    return current
            searcher = Searcher(self.ws, self.store, name, device=self.config.device, background_records=False)
            state = tuple(sql_row_state(self.store, searcher.index_id, m) for m in ("image", "text"))
            self._open[name] = _Open(searcher, state, time.monotonic())
            return self._open[name]

    # ---- queries -----------------------------------------------------------------------
    def query_vector(self, opened: _Open, body: dict[str, Any]) -> tuple[np.ndarray, str, dict[str, Any]]:
        """(vector (1, d), query modality, what to record) from text, a base64 image, an image URL or an embedding."""
        searcher = opened.searcher
        text, image, url, embedding = (body.get(k) for k in ("text", "image", "image_url", "embedding_input"))
        fields = (("text", text), ("image", image), ("image_url", url), ("embedding_input", embedding))
        given = [k for k, v in fields if v]
        if len(given) != 1:
            raise HTTPError(400, "give exactly one of text, image (base64), image_url or embedding_input")
        if text:
            if not isinstance(text, str):
                raise HTTPError(400, "text must be a string")
            return searcher.encode_queries(texts=[text]), "text", {"text": text}
        if embedding:
            vec = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
            if vec.shape[1] != searcher.encoder.dim or not np.isfinite(vec).all():
                raise HTTPError(400, f"embedding_input must be {searcher.encoder.dim} finite numbers")
            norm = float(np.linalg.norm(vec))
            if norm == 0:
                raise HTTPError(400, "embedding_input is all zeros")
            return vec / norm, str(body.get("embedding_modality") or "text"), {"embedding": True}
        if url:
            if not self.config.allow_remote_urls:
                raise HTTPError(403, "image_url is off on this server (start it with --allow-remote-urls)")
            data = _fetch(str(url), self.config.max_upload_bytes)
        else:
            data = decode_base64_image(str(image), self.config.max_upload_bytes)
        return encode_image_bytes(searcher, data), "image", {"image": url or "upload"}

    def knn(self, body: dict[str, Any], user: str = DEFAULT_CALLER) -> list[dict[str, Any]]:
        """clip-retrieval's `/knn-service`: hits in rank order, metadata only for the first num_images."""
        opened = self.searcher(body.get("indice_name"))
        searcher = opened.searcher
        num_images = _int(body.get("num_images", 40), "num_images")
        num_ids = max(num_images, _int(body.get("num_result_ids", num_images), "num_result_ids"))
        modality = body.get("modality") or "image"
        if modality not in ("image", "text"):
            raise HTTPError(400, f"modality must be image or text, not {modality!r}")
        with opened.lock:
            started = time.perf_counter()
            vec, query_modality, recorded = self.query_vector(opened, body)
            if modality not in searcher.modalities():
                raise HTTPError(400, f"index {searcher.name!r} has no {modality} vectors")
            deduplicate = bool(body.get("deduplicate", False))
            fetch = min(MAX_K, num_ids * 3 if deduplicate else num_ids)
            _, (hits,) = searcher.search_vectors(vec, to=modality, k=fetch, query_modality=query_modality)
            if deduplicate:
                hits = _deduplicate(searcher, modality, hits)
            hits = hits[:num_ids]
            latency = (time.perf_counter() - started) * 1000
            args = (searcher, recorded, modality, num_ids, hits, latency, "knn-service", None, user)
        if self.writer is not None:  # answered first, recorded by the writer thread (drained at shutdown)
            self.writer.submit(self.record, *args)
        else:
            self.record(*args)
        out = []
        for rank, hit in enumerate(hits):
            row: dict[str, Any] = {"id": hit.id, "similarity": round(float(hit.score), 6)}
            if rank < num_images:
                row.update(_metadata(hit.id, hit.text, hit.uri, hit.modality, hit.meta))
            out.append(row)
        return out

    def search(self, body: dict[str, Any], user: str = DEFAULT_CALLER) -> dict[str, Any]:
        """`/api/search`: the CLI's `--json` shape, with `offset` for paging."""
        from mmgen.search import SearchResult
        from mmgen.store.filters import as_filters, parse_where

        opened = self.searcher(body.get("index"))
        searcher = opened.searcher
        k = _int(body.get("k", 10), "k")
        offset = _int(body.get("offset", 0), "offset", minimum=0)
        if k + offset > MAX_K:
            raise HTTPError(400, f"k + offset must be at most {MAX_K}")
        where = body.get("where") or {}
        filters = parse_where(where) if isinstance(where, list) else as_filters(where)
        mode = str(body.get("mode") or "float")
        how, group, dedup = _retrieval(body)
        parent = parent_of(self.store, body)
        background = _record_mode(body) == "background" and self.writer is not None
        with opened.lock:
            started = time.perf_counter()
            if how.kind == "keyword":  # no vector needed: the words alone
                if not isinstance(body.get("text"), str):
                    raise HTTPError(400, "retrieval keyword needs text")
                vec, recorded = None, {"text": body["text"]}
                query_modality = "text"
            else:
                vec, query_modality, recorded = self.query_vector(opened, body)
            to, hits = searcher.find(
                vec, recorded.get("text"), to=body.get("to"), k=k + offset, where=filters, mode=mode,
                rerank=body.get("rerank"), query_modality=query_modality, retrieval=how, group=group, dedup=dedup,
            )  # fmt: skip
            hits = hits[offset:]
            latency = (time.perf_counter() - started) * 1000
            query = {**recorded, "to": to, "k": k, "offset": offset, "where": filters.to_json(), "index": searcher.name,
                     "encoder": searcher.encoder.name, "mode": mode,
                     **searcher.describe(how, mode, k, body.get("rerank"), group, dedup)}  # fmt: skip
            result = SearchResult(query=query, hits=hits, latency_ms=latency)
            args = (searcher, recorded, to, k, hits, latency, "api", query, user)
            if not background:
                result.prompt_id = self.record(*args)
        if background:  # answered first (prompt_id null), recorded and linked by the writer thread
            assert self.writer is not None
            self.writer.submit(lambda: link_parent(self.store, self.record(*args), parent))
        else:
            link_parent(self.store, result.prompt_id, parent)
        return result.to_json()

    @staticmethod
    def record(
        searcher: Searcher, recorded: dict[str, Any], to: str, k: int, hits: list[Any], latency: float,
        route: str, query: dict[str, Any] | None = None, user: str = DEFAULT_CALLER,
    ) -> int:  # fmt: skip
        """Record the request as the CLI records a search (`Searcher.record`), with the caller as user."""
        from mmgen.search import SearchResult

        params: dict[str, Any] = {"to": to, "k": k, "index": searcher.name, "encoder": searcher.encoder.name}
        params.update({key: v for key, v in (query or {}).items() if key not in ("text", "image")})
        params["route"] = route
        full = {"text": recorded.get("text"), "image": recorded.get("image"), **params}
        return searcher.record(SearchResult(query=full, hits=hits, latency_ms=latency), user=user)

    # ---- items -------------------------------------------------------------------------
    def metadata(self, body: dict[str, Any], user: str = DEFAULT_CALLER) -> list[dict[str, Any]]:
        """clip-retrieval's `/metadata`: `[{"id", "metadata"}]` for the ids the store knows (a lookup: not recorded)."""
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids) or len(ids) > MAX_K:
            raise HTTPError(400, f"ids must be a list of at most {MAX_K} integers")
        items = self._items(ids)
        return [{"id": i, "metadata": _metadata(i, *items[i])} for i in ids if i in items]

    def item(self, item_id: int) -> dict[str, Any]:
        """`/api/items/{id}`: one item of the store."""
        items = self._items([item_id])
        if item_id not in items:
            raise HTTPError(404, f"no item {item_id}")
        return {"id": item_id, **_metadata(item_id, *items[item_id])}

    def _items(self, ids: list[int]) -> dict[int, tuple[str | None, str | None, str, dict[str, Any]]]:
        from sqlalchemy import select

        from mmgen.store.models import Item

        with self.store.session() as s:
            rows = s.scalars(select(Item).where(Item.id.in_(ids))).all()
            return {
                int(r.id): (r.text, r.uri, "image" if r.uri and "image" in r.modality else "text", dict(r.meta or {}))
                for r in rows
            }

    def thumbnail(self, item_id: int, size: int) -> bytes:
        """PNG bytes of an indexed image, at most `size` pixels a side; only files the store knows are read."""
        from io import BytesIO

        from mmgen.data.images import load_image

        if not 8 <= size <= 1024:
            raise HTTPError(400, "size must be in 8..1024")
        items = self._items([item_id])
        if item_id not in items or items[item_id][2] != "image" or not items[item_id][1]:
            raise HTTPError(404, f"no image item {item_id}")
        try:
            img = load_image(str(items[item_id][1]), max_side=size)
        except MmgenError as exc:
            raise HTTPError(404, f"image {item_id} cannot be read: {exc}") from exc
        buf = BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()


# ---- helpers -----------------------------------------------------------------------------------
def _int(value: Any, name: str, minimum: int = 1) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise HTTPError(400, f"{name} must be an integer") from None
    if out < minimum or out > MAX_K:
        raise HTTPError(400, f"{name} must be in {minimum}..{MAX_K}")
    return out


def parent_of(store: Store, body: dict[str, Any]) -> int | None:
    """`parent_id`: the prompt a request refines ("more like this", a caption of a generated picture), checked."""
    from mmgen.errors import RecordNotFoundError
    from mmgen.records import require_prompt

    value = body.get("parent_id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise HTTPError(400, "parent_id must be a prompt id (an integer)")
    try:
        require_prompt(store, value)
    except RecordNotFoundError as exc:
        raise HTTPError(404, str(exc)) from exc
    return value


def link_parent(store: Store, prompt_id: int | None, parent: int | None) -> None:
    """Record the request's prompt as refined from `parent` (lineage: `mmgen show --tree`)."""
    if parent is not None and prompt_id is not None:
        from mmgen.records import link

        link(store, prompt_id, parent)


def _record_mode(body: dict[str, Any]) -> str:
    """`record`: `sync` (default: recorded before the answer, which carries its `prompt_id`) or `background`."""
    mode = body.get("record", "sync")
    if mode not in ("sync", "background"):
        raise HTTPError(400, f"record must be sync or background, not {mode!r}")
    return str(mode)


def _retrieval(body: dict[str, Any]) -> tuple[Any, bool, float | None]:
    """`retrieval` (vector | keyword | hybrid), `fusion`, `alpha`, `keyword_weight`, `depth`, `keyword_syntax`,
    `group_by`, `dedup`."""
    from mmgen.hybrid import DEFAULT_KEYWORD_WEIGHT, Retrieval

    try:
        alpha = float(body.get("alpha", 0.5))
        weight = float(body.get("keyword_weight", DEFAULT_KEYWORD_WEIGHT))
        dedup = None if body.get("dedup") is None else float(body["dedup"])
    except (TypeError, ValueError):
        raise HTTPError(400, "alpha, keyword_weight and dedup must be numbers") from None
    depth = _int(body["depth"], "depth") if body.get("depth") is not None else None
    how = Retrieval(str(body.get("retrieval") or "vector"), str(body.get("fusion") or "rrf"), alpha, depth,
                    str(body.get("keyword_syntax") or "plain"), weight).check()  # fmt: skip
    group_by = body.get("group_by")
    if group_by not in (None, "", "group"):
        raise HTTPError(400, f"group_by can only be 'group' (the items' concept group), not {group_by!r}")
    return how, bool(group_by), dedup


def _metadata(item_id: int, text: str | None, uri: str | None, modality: str, meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"caption": text, "image_path": uri if modality == "image" else None}
    out["url"] = f"/image/{item_id}" if modality == "image" else None
    for key, value in meta.items():
        out.setdefault(str(key), value)
    return out


def _deduplicate(searcher: Searcher, modality: str, hits: list[Any]) -> list[Any]:
    """Drop a hit whose cosine to a higher-ranked kept hit is at least DEDUP_COSINE."""
    from mmgen.dedup import collapse

    if len(hits) < 2:
        return hits
    return [hits[i] for i in collapse(searcher.item_vectors(modality, [h.id for h in hits]), DEDUP_COSINE)]


def decode_base64_image(data: str, limit: int) -> bytes:
    """The bytes of a base64 image (a `data:` URL prefix is allowed); 413 past `limit`, 400 if not base64."""
    if "," in data[:100] and data.startswith("data:"):
        data = data.split(",", 1)[1]
    if len(data) * 3 // 4 > limit:
        raise HTTPError(413, f"image larger than {limit // (1024 * 1024)} MiB")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, "image is not valid base64") from None


def verify_raster(data: bytes) -> None:
    """400 unless the bytes are a raster image (an SVG upload is refused: it could reference files)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise HTTPError(
            400, "the uploaded image is corrupt or not a raster image (PNG, JPEG, WebP, GIF, BMP, TIFF)"
        ) from None


def encode_image_bytes(searcher: Searcher, data: bytes) -> np.ndarray:
    """Encode uploaded image bytes; raster formats only."""
    from mmgen.data.images import load_image

    verify_raster(data)
    with tempfile.NamedTemporaryFile(suffix=".upload") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            image = load_image(tmp.name, untrusted=True)  # uploads come from elsewhere: limits, no references
        except MmgenError as exc:
            raise HTTPError(400, f"the uploaded image cannot be decoded: {exc}") from exc
    if "image" not in searcher.encoder.modalities:
        raise HTTPError(400, f"index {searcher.name!r} uses a text-only encoder; image queries need a joint encoder")
    return searcher.encoder.encode_image([image])


def _fetch(url: str, limit: int) -> bytes:
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise HTTPError(400, "image_url must be http(s)")
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - only with --allow-remote-urls
            data = resp.read(limit + 1)
    except OSError as exc:
        raise HTTPError(400, f"image_url could not be fetched: {exc}") from exc
    if len(data) > limit:
        raise HTTPError(413, f"image larger than {limit // (1024 * 1024)} MiB")
    return data


def parse_body(raw: bytes, limit: int) -> dict[str, Any]:
    """A JSON object from the request body, whatever its Content-Type (ClipClient sends none)."""
    if len(raw) > limit * 2:
        raise HTTPError(413, "request body too large")
    try:
        body = json.loads(raw.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError):
        raise HTTPError(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    return body


def check_config(host: str, token: str | list[str] | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        raise ConfigError(
            f"listening on {host} needs a token (--token T or MMGEN_TOKEN): anyone who can reach it could query"
        )
