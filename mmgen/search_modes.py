"""The vector search modes of `Searcher.search_vectors`, one small strategy each over the float and
binary indexes: `float` (exact inner product), `codes` (Hamming ranking of the hasher's packed codes)
and `rerank` (a Hamming short list re-scored exactly against the memory-mapped float vectors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mmgen.errors import ConfigError

if TYPE_CHECKING:
    from mmgen.index.vectors import VectorFile
    from mmgen.search import Searcher

SEARCH_MODES = ("float", "codes", "rerank")
DEFAULT_RERANK = 100
# rerank mode on flat codes: a Hamming list PRELIST x C long is cut to C by asymmetric scoring first
PRELIST = 10


def _float_mode(
    searcher: Searcher, queries: np.ndarray, query_modality: str, to: str, k: int,
    allowed: np.ndarray | None, rerank: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (or the preset's approximate) inner-product top k on the float index.

    A preset with `"exact_rerank": F` (`flat-fp16`) holds rounded vectors: its best F x k are re-scored
    exactly against the float vectors file, and the answer is checked to be the exact one (`certified_rerank`)."""
    factor = int(searcher.folder.preset.search.get("exact_rerank", 0))
    if factor < 1:
        return searcher._faiss(to).search(queries, k, allowed_ids=allowed)  # fmt: skip
    index, vectors = searcher._faiss(to), searcher.folder.vectors(to)
    return certified_rerank(queries, lambda q, depth: index.search(q, depth, allowed_ids=allowed), vectors,
                            k, factor * k, fp16_slack(vectors))  # fmt: skip


# fp16 keeps 11 significant bits: rounding moves a normal value by at most 2^-11 of itself, a subnormal one
# (below 2^-14) by at most 2^-25; beyond 65504 it overflows.
FP16_UNIT, FP16_TINY, FP16_MAX = 2.0**-11, 2.0**-25, 65504.0


def fp16_slack(vectors: VectorFile) -> float:
    """A bound on |q . x - q . fp16(x)| per unit of |q|, for every row x of `vectors`: the rounding of x
    (Cauchy-Schwarz over its largest norm X: 2^-11 X + 2^-25 sqrt(d)) plus float32 accumulation in both dot
    products (d 2^-24 X each). Infinite where a row could overflow fp16."""
    top, d = vectors.max_norm(), vectors.dim
    if top >= FP16_MAX:
        return float("inf")
    return FP16_UNIT * top + FP16_TINY * d**0.5 + 2 * d * 2.0**-24 * top * 1.01


def certified_rerank(
    queries: np.ndarray, search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]], vectors: VectorFile,
    k: int, depth: int, slack: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top k of each query from an approximate index whose scores are within `slack` x |q| of the
    exact ones, proven rather than hoped for.

    `search(q, n)` gives the approximate best n (scores, row ids; -1 past the end). Those rows are re-scored
    exactly from `vectors` (ties to the lower row id, as a Flat index). A row left out scores at most the
    last approximate score + slack |q| exactly; when the k-th exact score is above that, no row left out can
    enter the top k and the answer is exact. Otherwise that query asks for four times as many rows, until
    the bound holds or every row is a candidate."""
    queries = np.asarray(queries, dtype=np.float32)
    scores = np.zeros((len(queries), k), dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    pending = np.arange(len(queries))
    while len(pending):
        approx, short = search(queries[pending], depth)
        again = []
        for at, row in enumerate(pending):
            q, cand = queries[row], short[at]
            valid = cand >= 0
            cand = cand[valid]
            exact = vectors.get(cand) @ q if len(cand) else np.zeros(0, dtype=np.float32)
            order = np.lexsort((cand, -exact))[:k]
            everything = len(cand) < depth  # the index (or the allowed rows) had no more to give
            bound = approx[at][valid][-1] + slack * float(np.linalg.norm(q)) if len(cand) else 0.0
            if not everything and exact[order[-1]] <= bound:  # a row left out could still belong
                again.append(row)
                continue
            scores[row, : len(order)], ids[row, : len(order)] = exact[order], cand[order]
        pending, depth = np.asarray(again, dtype=np.int64), depth * 4
    return scores, ids


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
    ["Searcher", np.ndarray, str, str, int, "np.ndarray | None", "int | None"], tuple[np.ndarray, np.ndarray]
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
