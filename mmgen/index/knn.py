"""The one exact k-nearest-neighbour search over float vectors held in memory.

Every caller that needs exact neighbours outside a FAISS index file (generator neighbours,
hasher training pairs, hashing evaluation, generation metrics) calls `exact_knn`. Scores are
inner products (cosine for L2-normalised rows); results are best first, ties by lower index,
so they never depend on the machine's thread count.

- `exclude_self`: query i is database row i (a self-join); a row is never its own neighbour.
- `query_groups` / `database_groups`: integer group codes; a database row of the query's own
  group is never returned (the other styles of a concept, when training must not copy).
- `allowed`: database positions to search among (a filter), as FAISS's id selectors do.
- `device`: "cpu", or a torch CUDA device for the blocked product on a GPU.
"""

from __future__ import annotations

import numpy as np

from mmgen.errors import DataError, VectorIndexError

CHUNK = 1024


def exact_knn(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    exclude_self: bool = False,
    query_groups: np.ndarray | None = None,
    database_groups: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    device: str = "cpu",
    strict: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, positions), each (n_queries, k), best first; position -1 where fewer than k exist.

    With `strict` (the default) fewer than k eligible rows is a DataError; without it the rows
    past the eligible ones are -1 with score -inf.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    database = np.ascontiguousarray(database, dtype=np.float32)
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise VectorIndexError(f"queries {queries.shape} and database {database.shape} do not match")
    if (query_groups is None) != (database_groups is None):
        raise VectorIndexError("give groups for both queries and database, or for neither")
    if exclude_self and len(queries) != len(database):
        raise VectorIndexError("exclude_self needs the queries to be the database rows")
    if k < 1 or k > len(database):
        raise VectorIndexError(f"k must be in 1..{len(database)} (the database rows), not {k}")
    mask_cols = None
    if allowed is not None:
        mask_cols = np.ones(len(database), dtype=bool)
        mask_cols[np.asarray(allowed, dtype=np.int64)] = False  # True: not allowed
    scores_out = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids_out = np.full((len(queries), k), -1, dtype=np.int64)
    matmul = _matmul(database, device)
    for start in range(0, len(queries), CHUNK):
        stop = min(start + CHUNK, len(queries))
        scores = matmul(queries[start:stop])
        if mask_cols is not None:
            scores[:, mask_cols] = -np.inf
        if query_groups is not None and database_groups is not None:
            scores[np.asarray(query_groups[start:stop])[:, None] == np.asarray(database_groups)[None, :]] = -np.inf
        if exclude_self:
            rows = np.arange(stop - start)
            scores[rows, rows + start] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)  # by score, ties by index
        ids = np.take_along_axis(part, order, axis=1)
        best = np.take_along_axis(part_scores, order, axis=1)
        ids[~np.isfinite(best)] = -1
        ids_out[start:stop], scores_out[start:stop] = ids, best
    if strict and (ids_out < 0).any():
        raise DataError(f"fewer than {k} eligible neighbours for some query; lower k")
    return scores_out, ids_out


def _matmul(database: np.ndarray, device: str):  # noqa: ANN202 - a small closure
    if device == "cpu" or not device.startswith("cuda"):
        return lambda q: q @ database.T
    import torch

    db = torch.from_numpy(database).to(device)
    return lambda q: (torch.from_numpy(q).to(device) @ db.T).float().cpu().numpy()
