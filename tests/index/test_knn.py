"""The one exact k-nearest-neighbour search: brute force agreement, own-group and self exclusion, filters."""

from __future__ import annotations

import numpy as np
import pytest

from mmgen.errors import DataError, VectorIndexError
from mmgen.index.knn import exact_knn


def _unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_matches_brute_force_and_excludes_own_group() -> None:
    rng = np.random.default_rng(0)
    cand = _unit(rng, 50)
    queries = cand[:10] + 0.01 * rng.normal(size=(10, 8)).astype(np.float32)
    scores, idx = exact_knn(queries, cand, 5)
    brute = np.argsort(-(queries @ cand.T), axis=1, kind="stable")[:, :5]
    assert np.array_equal(idx, brute) and np.all(np.diff(scores, axis=1) <= 0)
    groups = np.arange(50) // 2  # pairs share a group
    _, idx = exact_knn(queries, cand, 5, query_groups=groups[:10], database_groups=groups)
    assert not np.any(groups[idx] == groups[:10, None])
    with pytest.raises(VectorIndexError):
        exact_knn(queries, cand, 51)
    with pytest.raises(DataError, match="fewer than"):
        exact_knn(queries[:1], cand[:2], 2, query_groups=groups[:1], database_groups=np.zeros(2, dtype=np.int64))


def test_self_join_never_returns_the_row_itself_even_with_duplicates() -> None:
    rng = np.random.default_rng(1)
    db = _unit(rng, 20)
    db[5] = db[4]  # an exact duplicate: its twin is a neighbour, itself is not
    _, idx = exact_knn(db, db, 3, exclude_self=True)
    assert not np.any(idx == np.arange(20)[:, None])
    assert idx[4, 0] == 5 and idx[5, 0] == 4


def test_allowed_rows_filter_and_short_results() -> None:
    rng = np.random.default_rng(2)
    db = _unit(rng, 30)
    allowed = np.array([3, 7, 11, 19])
    scores, idx = exact_knn(db[:6], db, 3, allowed=allowed)
    assert set(idx.ravel()) <= set(allowed.tolist())
    brute = (db[:6] @ db[allowed].T).max(axis=1)
    np.testing.assert_allclose(scores[:, 0], brute, rtol=1e-6)
    scores, idx = exact_knn(db[:2], db, 6, allowed=allowed, strict=False)
    assert (idx[:, 4:] == -1).all() and np.isneginf(scores[:, 4:]).all() and (idx[:, :4] >= 0).all()


def test_ties_order_by_index() -> None:
    db = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (6, 1))
    _, idx = exact_knn(np.array([[1.0, 0.0]], dtype=np.float32), db, 4)
    assert idx.tolist() == [[0, 1, 2, 3]]
