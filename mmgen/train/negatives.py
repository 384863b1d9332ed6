"""Hard negatives for contrastive training: batches that hold groups of nearby concepts.

A random batch of 256 concepts out of tens of thousands rarely holds two that are easy to confuse
("fox" beside "wolf", "compass" beside "clock"), so the loss seldom asks the image tower to tell
them apart. With hard negatives a share of each batch is built from small neighbourhoods: an anchor
concept and a few of its nearest concepts by the (locked) MiniLM embedding of their captions.
"""

from __future__ import annotations

import numpy as np

from mmgen.errors import ConfigError

# Concepts per neighbourhood (the anchor and GROUP - 1 of its neighbours) and the pool the
# neighbours are drawn from, so one anchor does not always bring the same companions.
GROUP = 4
POOL = 16


def check_hard_negatives(share: float) -> None:
    """Raise ConfigError unless `share` is a fraction of the batch in [0, 1)."""
    if not 0 <= share < 1:
        raise ConfigError(f"hard_negatives is the share of a batch built from neighbourhoods, in [0, 1), not {share!r}")


def concept_neighbours(unit_vectors: np.ndarray, pool: int = POOL) -> np.ndarray:
    """(n_units, pool) ids of each unit's nearest other units by cosine (rows are L2-normalised)."""
    import faiss

    vectors = np.ascontiguousarray(unit_vectors, dtype=np.float32)
    n = len(vectors)
    k = min(pool + 1, n)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    _, ids = index.search(vectors, k)
    out = np.empty((n, k - 1), dtype=np.int64)
    for i in range(n):
        row = ids[i][ids[i] != i]
        out[i] = row[: k - 1] if len(row) >= k - 1 else np.pad(row, (0, k - 1 - len(row)), mode="edge")
    return out


def with_neighbourhoods(
    units: np.ndarray, neighbours: np.ndarray, share: float, rng: np.random.Generator
) -> np.ndarray:
    """`units` (distinct) with about `share` of them replaced by neighbourhoods of its first units.

    The result keeps the batch size and stays distinct; step-determinism comes from `rng`.
    """
    size = len(units)
    extra_target = int(round(share * size * (GROUP - 1) / GROUP))
    n_anchor = extra_target // (GROUP - 1)
    if n_anchor == 0 or neighbours.shape[1] == 0:
        return units
    keep = list(units[: size - n_anchor * (GROUP - 1)])
    seen = set(keep)
    for anchor in units[:n_anchor]:
        pool = neighbours[anchor]
        for j in rng.permutation(len(pool))[: GROUP - 1]:
            u = int(pool[j])
            if u not in seen:
                seen.add(u)
                keep.append(u)
    for u in units[size - n_anchor * (GROUP - 1) :]:  # refill what duplicates left empty
        if len(keep) >= size:
            break
        if int(u) not in seen:
            seen.add(int(u))
            keep.append(int(u))
    return np.asarray(keep[:size], dtype=units.dtype)
