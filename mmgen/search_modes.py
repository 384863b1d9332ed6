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
    exactly against the float vectors file, so scores are those of the flat preset."""
    factor = int(searcher.folder.preset.search.get("exact_rerank", 0))
    if factor < 1:
        return searcher._faiss(to).search(queries, k, allowed_ids=allowed)  # fmt: skip
    _, short = searcher._faiss(to).search(queries, factor * k, allowed_ids=allowed)
    return rerank_exact(queries, short, searcher.folder.vectors(to), k)


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
