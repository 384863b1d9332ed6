"""The certified re-rank of `flat-fp16` (`mmgen.search_modes.certified_rerank`): exact answers, proven per query."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmgen.index import resolve_preset
from mmgen.index.faiss_index import FaissIndex
from mmgen.index.vectors import VectorFile
from mmgen.search_modes import certified_rerank, fp16_slack


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _exact(queries: np.ndarray, vectors: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Brute force in float64: best k per query, ties to the lower row id."""
    rows = np.arange(len(vectors)) if rows is None else rows
    scores = queries.astype(np.float64) @ vectors[rows].astype(np.float64).T
    out_s, out_i = [], []
    for row in scores:
        order = np.lexsort((rows, -row))[:k]
        out_s.append(row[order])
        out_i.append(rows[order])
    return np.array(out_s), np.array(out_i)


def _fp16_index(vectors: np.ndarray) -> FaissIndex:
    index = FaissIndex(vectors.shape[1], resolve_preset("flat-fp16"))
    index.add(np.arange(len(vectors), dtype=np.int64), vectors)
    return index


def _file(tmp_path: Path, vectors: np.ndarray) -> VectorFile:
    file = VectorFile(tmp_path / "v.f32", vectors.shape[1])
    file.append(vectors)
    return file


def test_it_answers_as_exact_search_on_a_real_fp16_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors, queries = _unit(rng, 3000, 32), _unit(rng, 40, 32)
    index, file = _fp16_index(vectors), _file(tmp_path, vectors)
    scores, ids = certified_rerank(queries, index.search, file, 10, 40, fp16_slack(file))
    want_s, want_i = _exact(queries, vectors, 10)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_allclose(scores, want_s, atol=1e-6)


def test_many_equal_vectors_widen_the_list_until_the_ties_are_settled_by_row_id(tmp_path: Path) -> None:
    """60 copies of the query's best vector tie: the first 40 candidates cannot prove which 10 come first
    (a copy left out could have a lower row id), so the list widens, and the answer is the 10 lowest rows."""
    rng = np.random.default_rng(1)
    vectors = _unit(rng, 2000, 16)
    copies = rng.choice(2000, 60, replace=False)
    vectors[copies] = vectors[copies[0]]
    query = vectors[copies[:1]] + 0.01 * _unit(rng, 1, 16)
    asked: list[int] = []
    index, file = _fp16_index(vectors), _file(tmp_path, vectors)

    def search(q: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        asked.append(depth)
        return index.search(q, depth)

    _, ids = certified_rerank(query, search, file, 10, 40, fp16_slack(file))
    assert asked == [40, 160]
    assert ids[0].tolist() == sorted(copies.tolist())[:10]


def test_a_noisy_search_still_gives_the_exact_answer_when_its_noise_is_within_the_slack(tmp_path: Path) -> None:
    """Any approximate search whose scores are within the slack works, however it orders near scores."""
    rng = np.random.default_rng(2)
    vectors, queries = _unit(rng, 500, 8), _unit(rng, 30, 8)
    file = _file(tmp_path, vectors)
    slack = 0.2
    allowed = np.sort(rng.choice(500, 300, replace=False))

    def noisy(q: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        approx = q @ vectors[allowed].T + rng.uniform(-slack, slack, (len(q), len(allowed))).astype(np.float32)
        order = np.argsort(-approx, axis=1)[:, :depth]
        ids = np.full((len(q), depth), -1, dtype=np.int64)
        scores = np.full((len(q), depth), -np.inf, dtype=np.float32)
        ids[:, : order.shape[1]] = allowed[order]
        scores[:, : order.shape[1]] = np.take_along_axis(approx, order, axis=1)
        return scores, ids

    _, ids = certified_rerank(queries, noisy, file, 5, 10, slack)
    np.testing.assert_array_equal(ids, _exact(queries, vectors, 5, allowed)[1])


def test_fewer_rows_than_k_are_all_returned_and_padded(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = _unit(rng, 3, 8)
    index, file = _fp16_index(vectors), _file(tmp_path, vectors)
    scores, ids = certified_rerank(vectors[:1], index.search, file, 5, 20, fp16_slack(file))
    assert ids[0, :3].tolist() == _exact(vectors[:1], vectors, 3)[1][0].tolist()
    assert ids[0, 3:].tolist() == [-1, -1] and scores[0, 3:].tolist() == [0.0, 0.0]


def test_the_slack_follows_the_largest_norm_and_refuses_values_fp16_cannot_hold(tmp_path: Path) -> None:
    file = VectorFile(tmp_path / "v.f32", 4)
    assert file.max_norm() == 0.0
    file.append(np.array([[3.0, 4.0, 0.0, 0.0]], dtype=np.float32))
    small = fp16_slack(file)
    assert small == pytest.approx(5 * 2.0**-11 + 2 * 2.0**-25 + 2 * 4 * 2.0**-24 * 5 * 1.01)
    file.append(np.array([[0.0, 0.0, 0.0, 10.0]], dtype=np.float32))  # read incrementally: the new row counts
    assert file.max_norm() == 10.0 and fp16_slack(file) > small
    file.append(np.array([[7e4, 0.0, 0.0, 0.0]], dtype=np.float32))
    assert fp16_slack(file) == float("inf")
