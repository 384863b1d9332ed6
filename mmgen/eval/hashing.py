"""`mmgen eval hashing`: binary codes against exact float search, on queries held out from hasher training.

For each trained hasher of an index (or the ones named), and at its code width, the same
measurements for FAISS's unsupervised binary baselines trained on the same training vectors
(random-hyperplane LSH, ITQ, PCA-sign):

- recall@10: |top 10 by Hamming distance ∩ top 10 by exact inner product| / 10, averaged over queries;
- mAP@100: average precision of the top 100, relevant = same group, normalised by
  min(100, relevant items in the database);
- each with codes only, and with an exact re-rank of a Hamming short list of C candidates;
- for the autoencoder also `asym-rerank`, what `mmgen search --mode rerank` does on the flat
  preset: a Hamming list 10 x C long, cut to C by asymmetric scoring (the query's real-valued
  code against the candidates' bits), then re-ranked exactly (still C float reads per query);
- bytes per item and queries/s (query encoding + search, all queries in one batch).

Queries are the held-out items of the hasher's manifest (texts search image codes, images
search text codes); the database is every live item of the index, held-out ones included.
A saved baseline (`mmgen train hasher --method lsh`, `mmgen index --hash lsh-64`) named with
--hasher is measured as saved (its name in the rows' `hasher`) instead of one fitted on the fly;
without --hasher the registered autoencoders are evaluated (the saved baselines when there are none).
Ties in Hamming distance are left in FAISS's order, as a search would return them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.errors import ConfigError
from mmgen.hashing.baselines import BASELINES, FaissBaseline
from mmgen.index.codes import check_bits, hamming_knn
from mmgen.hashing.data import IndexVectors, load_index_vectors
from mmgen.search import DEFAULT_RERANK

if TYPE_CHECKING:
    from mmgen.hashing.base import BaseHasher
    from mmgen.workspace import Workspace

DIRECTIONS = (("text", "image"), ("image", "text"))
METHODS = ("autoencoder", *BASELINES)
RECALL_K = 10
MAP_DEPTH = 100
_CHUNK = 256


def direction_name(query: str, database: str) -> str:
    """`text->image` and so on."""
    return f"{query}->{database}"


# ---- metrics: tiny pure functions ------------------------------------------------------------
def recall_vs_exact(found: np.ndarray, exact: np.ndarray, k: int = RECALL_K) -> float:
    """Mean |found[:k] ∩ exact[:k]| / k over queries (ids; -1 never matches)."""
    if len(found) == 0:
        raise ConfigError("no queries to evaluate")
    hits = [len(np.intersect1d(f[:k][f[:k] >= 0], e[:k])) for f, e in zip(found, exact)]
    return float(np.mean(hits)) / k


def average_precision(relevant: np.ndarray, n_relevant: np.ndarray, depth: int = MAP_DEPTH) -> float:
    """mAP@depth: rows of 0/1 relevance in ranked order; normalised by min(depth, relevant in the database)."""
    rel = np.asarray(relevant, dtype=np.float64)[:, :depth]
    ranks = np.arange(1, rel.shape[1] + 1)
    precision = np.cumsum(rel, axis=1) / ranks
    denom = np.minimum(np.asarray(n_relevant, dtype=np.float64), depth)
    keep = denom > 0
    if not keep.any():
        raise ConfigError("no query has a relevant item (same group) in the database")
    return float(np.mean((precision * rel).sum(axis=1)[keep] / denom[keep]))


# ---- report --------------------------------------------------------------------------------
@dataclass
class HashingRow:
    """One method at one code width, codes only or re-ranked."""

    method: str  # "exact", "autoencoder", "lsh", "itq", "pca"
    bits: int | None
    mode: str  # "float", "codes", "rerank" (Hamming short list), "asym-rerank" (asymmetric pre-list, as search does)
    rerank: int | None
    bytes_per_item: int
    recall_at_10: dict[str, float]
    map_at_100: dict[str, float]
    queries_per_s: dict[str, float]
    hasher: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form of one row."""
        return {
            "method": self.method,
            "hasher": self.hasher,
            "bits": self.bits,
            "mode": self.mode,
            "rerank": self.rerank,
            "bytes_per_item": self.bytes_per_item,
            "recall_at_10": {k: round(v, 4) for k, v in self.recall_at_10.items()},
            "map_at_100": {k: round(v, 4) for k, v in self.map_at_100.items()},
            "queries_per_s": {k: round(v, 1) for k, v in self.queries_per_s.items()},
        }


@dataclass
class HashingReport:
    """All rows of one evaluation, with what was evaluated on what."""

    index: str
    encoder: str
    database: dict[str, int]
    queries: dict[str, int]
    holdout: dict[str, Any]
    rerank: int
    rows: list[HashingRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The stable `--json` form of `mmgen eval hashing`."""
        return {
            "index": self.index,
            "encoder": self.encoder,
            "database": dict(self.database),
            "queries": dict(self.queries),
            "holdout": dict(self.holdout),
            "rerank": self.rerank,
            "rows": [r.to_json() for r in self.rows],
        }

    def table(self) -> str:
        """The report as a fixed-width text table (headline: the mean of both cross-modal directions)."""
        lines = [
            f"index {self.index!r} ({self.encoder}): database "
            + ", ".join(f"{n} {m}s" for m, n in self.database.items())
            + "; held-out queries "
            + ", ".join(f"{n} {d}" for d, n in self.queries.items())
            + f" ({self.holdout['fraction']:.0%} of groups, seed {self.holdout['seed']})",
            (
                f"{'method':12s} {'bits':>4s} {'B/item':>6s} {'mode':10s} "
                f"{'R@10 t>i':>8s} {'i>t':>6s} {'mean':>6s}  {'mAP@100 t>i':>11s} {'i>t':>6s} {'mean':>6s} {'q/s':>8s}"
            ),
        ]
        for r in self.rows:
            mode = r.mode if r.rerank is None else f"{'asym' if r.mode == 'asym-rerank' else 'rerank'} {r.rerank}"
            rec, mp = r.recall_at_10, r.map_at_100
            qps = float(np.mean(list(r.queries_per_s.values())))
            lines.append(
                f"{r.method:12s} {r.bits if r.bits else '-':>4} {r.bytes_per_item:6d} {mode:10s} "
                f"{rec['text->image']:8.3f} {rec['image->text']:6.3f} {rec['mean']:6.3f}  "
                f"{mp['text->image']:11.3f} {mp['image->text']:6.3f} {mp['mean']:6.3f} {qps:8.0f}"
            )
        return "\n".join(lines)


# ---- evaluation ------------------------------------------------------------------------------
@dataclass
class _Split:
    """Queries and database of one held-out split, with exact ground truth per direction."""

    train: IndexVectors
    held: IndexVectors
    full: IndexVectors
    exact: dict[str, np.ndarray]
    n_relevant: dict[str, np.ndarray]
    exact_qps: dict[str, float]


def evaluate_hashing(
    ws: Workspace,
    index: str | None = None,
    hashers: Sequence[str] | None = None,
    bits: Sequence[int] | None = None,
    methods: Sequence[str] = METHODS,
    rerank: int = DEFAULT_RERANK,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> HashingReport:
    """Evaluate the trained hashers of an index (or the named ones) and the FAISS baselines at their widths."""
    from mmgen.catalog import pick_index_name
    from mmgen.store.db import open_store

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"methods must be among {', '.join(METHODS)}, got {', '.join(methods) or 'none'}")
    if rerank < RECALL_K:
        raise ConfigError(f"--rerank must be at least {RECALL_K}")
    wanted_bits = {check_bits(b) for b in bits} if bits else None
    store = open_store(ws.db_url)
    try:
        name = pick_index_name(store, index)
        found = _find_hashers(ws, store, name, hashers, wanted_bits)
        data = load_index_vectors(ws, store, name)
    finally:
        store.close()
    if len(data.modalities) < 2:
        raise ConfigError(f"index {name!r} holds only {', '.join(data.modalities)} vectors; hashing is evaluated across modalities")
    for hasher in found:
        hasher.check_index(index=name, encoder=data.encoder, encoder_checksum=data.encoder_checksum, dim=data.dim)
    holdouts = {tuple(h.manifest["holdout"]["groups"]) for h in found}
    if len(holdouts) > 1:
        raise ConfigError(
            "the hashers were trained with different held-out groups; evaluate them one at a time (--hasher NAME)"
        )
    holdout = found[0].manifest["holdout"]
    if not holdout["groups"]:
        raise ConfigError(f"hasher {found[0].name!r} held no groups out of training: nothing to evaluate on")
    say = progress or (lambda _msg: None)
    split = _prepare_split(data, set(holdout["groups"]), rerank)
    report = HashingReport(
        index=name,
        encoder=data.encoder,
        database={m: len(v) for m, v in data.modalities.items()},
        queries={direction_name(q, d): len(split.held.modalities[q]) for q, d in DIRECTIONS},
        holdout={"fraction": holdout["fraction"], "seed": holdout["seed"], "groups": len(holdout["groups"])},
        rerank=rerank,
    )
    report.rows.append(_exact_row(split, data.dim))
    train_vectors = np.concatenate([split.train.modalities[m].vectors for m in ("image", "text")])
    widths: dict[int, dict[str, BaseHasher]] = {}
    for hasher in found:
        widths.setdefault(hasher.bits, {})[hasher.method] = hasher
    for width, saved in sorted(widths.items()):
        for method in methods:
            soft: Callable[[np.ndarray, str], np.ndarray] | None = None
            if method in saved:  # the autoencoder, or a saved baseline: as saved
                hasher = saved[method]
                encode, label = hasher.encode, hasher.name
                soft = getattr(hasher, "soft", None) if hasher.has_logits else None
            elif method == "autoencoder":  # only saved baselines at this width
                continue
            else:
                baseline = FaissBaseline(method, data.dim, width).train(train_vectors)
                encode, label = (lambda x, _m, b=baseline: b.encode(x)), None
            say(f"{method} {width} bits")
            report.rows.extend(_method_rows(method, width, encode, split, rerank, label, device, soft))
    return report


def _find_hashers(
    ws: Workspace, store: Any, index: str, names: Sequence[str] | None, bits: set[int] | None
) -> list[BaseHasher]:
    """The named hashers, or the newest registered hasher of each name trained on `index` (autoencoders; saved
    baselines when there are none); filtered by width, one per width and method."""
    from sqlalchemy import select

    from mmgen.hashing.model import load_hasher
    from mmgen.store.models import ModelRecord

    if names:
        found = [load_hasher(n, ws.models_dir) for n in names]
    else:
        with store.session() as s:
            rows = s.scalars(select(ModelRecord).where(ModelRecord.kind == "hasher").order_by(ModelRecord.id)).all()
            paths: dict[str, str] = {}
            for r in rows:  # in registration order, so a retrained name moves to the end
                if (r.params or {}).get("index") == index and r.path:
                    paths.pop(r.name, None)
                    paths[r.name] = r.path
        found = [load_hasher(str(Path(p)), ws.models_dir) for p in paths.values() if Path(p).is_dir()]
        if any(h.method == "autoencoder" for h in found):
            found = [h for h in found if h.method == "autoencoder"]
    if bits is not None:
        missing = sorted(bits - {h.bits for h in found})
        if missing:
            raise ConfigError(
                f"no hasher of {', '.join(map(str, missing))} bits for index {index!r}; train one with "
                f"`mmgen train hasher --index {index} --bits {missing[0]}`"
            )
        found = [h for h in found if h.bits in bits]
    if not found:
        raise ConfigError(f"no hasher trained on index {index!r}; train one with `mmgen train hasher --index {index}`")
    by_width: dict[tuple[int, str], BaseHasher] = {}
    for h in found:  # one hasher per width and method: the last named / newest registered wins
        by_width[(h.bits, h.method)] = h
    return list(by_width.values())


def _prepare_split(data: IndexVectors, held_groups: set[str], rerank: int) -> _Split:
    from mmgen.index.knn import exact_knn

    train, held = data.split(held_groups)
    exact, n_relevant, qps = {}, {}, {}
    depth = max(MAP_DEPTH, RECALL_K)
    for q, d in DIRECTIONS:
        key = direction_name(q, d)
        queries, database = held.modalities[q], data.modalities[d]
        if len(queries) == 0:
            raise ConfigError(f"no held-out {q} queries: the held-out groups have no {q}s")
        started = time.perf_counter()
        _, exact[key] = exact_knn(queries.vectors, database.vectors, min(depth, len(database)))
        qps[key] = len(queries) / max(time.perf_counter() - started, 1e-9)
        counts = _group_counts(database.groups)
        n_relevant[key] = np.array([counts.get(g, 0) for g in queries.groups], dtype=np.int64)
    return _Split(train, held, data, exact, n_relevant, qps)


def _group_counts(groups: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(groups.astype(str), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def _relevance(split: _Split, q: str, d: str, ranked: np.ndarray) -> np.ndarray:
    qg = split.held.modalities[q].groups.astype(str)
    dg = split.full.modalities[d].groups.astype(str)
    return (ranked >= 0) & (dg[np.maximum(ranked, 0)] == qg[:, None])


def _exact_row(split: _Split, dim: int) -> HashingRow:
    rec, mp = {}, {}
    for q, d in DIRECTIONS:
        key = direction_name(q, d)
        rec[key] = 1.0
        mp[key] = average_precision(_relevance(split, q, d, split.exact[key]), split.n_relevant[key])
    return HashingRow("exact", None, "float", None, 4 * dim, _with_mean(rec), _with_mean(mp), dict(split.exact_qps))


def _method_rows(
    method: str,
    bits: int,
    encode: Callable[[np.ndarray, str], np.ndarray],
    split: _Split,
    rerank: int,
    hasher: str | None,
    device: str,
    soft: Callable[[np.ndarray, str], np.ndarray] | None = None,
) -> list[HashingRow]:
    """Codes only and re-ranked rows; with `soft` (the autoencoder) also the asymmetric pre-list that search uses."""
    from mmgen.index.codes import asymmetric_prune
    from mmgen.search import PRELIST

    codes_rec, codes_map, codes_qps, rr_rec, rr_map, rr_qps = {}, {}, {}, {}, {}, {}
    as_rec, as_map, as_qps = {}, {}, {}
    depth = max(MAP_DEPTH, rerank)
    for q, d in DIRECTIONS:
        key = direction_name(q, d)
        queries, database = split.held.modalities[q], split.full.modalities[d]
        db_codes = encode(database.vectors, d)
        started = time.perf_counter()
        q_codes = encode(queries.vectors, q)
        hamming_knn(q_codes, db_codes, min(RECALL_K, len(database)), device=device)  # timed: what a search does
        codes_qps[key] = len(queries) / max(time.perf_counter() - started, 1e-9)
        started = time.perf_counter()
        q_codes = encode(queries.vectors, q)
        _, short = hamming_knn(q_codes, db_codes, min(rerank, len(database)), device=device)
        reranked = _rerank(queries.vectors, short, database.vectors)
        rr_qps[key] = len(queries) / max(time.perf_counter() - started, 1e-9)
        _, deep = hamming_knn(q_codes, db_codes, min(depth, len(database)), device=device)
        codes_rec[key] = recall_vs_exact(deep, split.exact[key])
        codes_map[key] = average_precision(_relevance(split, q, d, deep), split.n_relevant[key])
        rr_rec[key] = recall_vs_exact(reranked, split.exact[key])
        rr_map[key] = average_precision(_relevance(split, q, d, reranked), split.n_relevant[key])
        if soft is not None:
            started = time.perf_counter()
            q_codes = encode(queries.vectors, q)
            _, long = hamming_knn(q_codes, db_codes, min(PRELIST * rerank, len(database)), device=device)
            short = asymmetric_prune(soft(queries.vectors, q), long, db_codes, rerank)
            asym = _rerank(queries.vectors, short, database.vectors)
            as_qps[key] = len(queries) / max(time.perf_counter() - started, 1e-9)
            as_rec[key] = recall_vs_exact(asym, split.exact[key])
            as_map[key] = average_precision(_relevance(split, q, d, asym), split.n_relevant[key])
    nbytes = bits // 8
    rows = [
        HashingRow(method, bits, "codes", None, nbytes, _with_mean(codes_rec), _with_mean(codes_map), codes_qps, hasher),
        HashingRow(method, bits, "rerank", rerank, nbytes, _with_mean(rr_rec), _with_mean(rr_map), rr_qps, hasher),
    ]
    if soft is not None:
        rows.append(
            HashingRow(method, bits, "asym-rerank", rerank, nbytes, _with_mean(as_rec), _with_mean(as_map), as_qps, hasher)
        )
    return rows


def _rerank(queries: np.ndarray, short: np.ndarray, database: np.ndarray) -> np.ndarray:
    """Short lists re-ordered by exact inner product (best first)."""
    out = np.full_like(short, -1)
    for start in range(0, len(queries), _CHUNK):
        cand = short[start : start + _CHUNK]
        scores = np.einsum("qd,qcd->qc", queries[start : start + _CHUNK], database[np.maximum(cand, 0)])
        scores[cand < 0] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")
        out[start : start + _CHUNK] = np.take_along_axis(cand, order, axis=1)
    return out


def _with_mean(values: dict[str, float]) -> dict[str, float]:
    return {**values, "mean": float(np.mean(list(values.values())))}
