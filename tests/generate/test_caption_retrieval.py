"""Neighbour captions: leave-out retrieval against brute force, hit filtering, kNN consensus."""

from __future__ import annotations

import numpy as np
import pytest

from mmgen.errors import ConfigError
from mmgen.generate.caption_retrieval import (
    consensus_order,
    distinct_captions,
    leave_out,
)
from mmgen.search import Hit


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force(q, qk, c, ck, ct, k):
    out = []
    for vec, key in zip(q, qk):
        scores = c @ vec
        order = sorted(range(len(c)), key=lambda j: (-scores[j], j))
        picked, seen = [], set()
        for j in order:
            if key in ck[j] or ct[j] in seen:
                continue
            seen.add(ct[j])
            picked.append(j)
            if len(picked) == k:
                break
        out.append(picked)
    return out


@pytest.mark.parametrize("k", [1, 3, 7])
def test_leave_out_matches_brute_force(k) -> None:
    rng = np.random.default_rng(k)
    c = _unit(rng, 300, 16)
    # each candidate carries a concept and an image key; 60 concepts, 150 distinct images
    ck = [(f"concept:g{i % 60}", f"image:h{i % 150}") for i in range(300)]
    # duplicated texts: the same caption under several groups and rows
    ct = [f"t{i % 90}" for i in range(300)]
    q = _unit(rng, 50, 16)
    # half the queries leave out their concept, half only their image
    qk = [f"concept:g{i}" if i % 2 else f"image:h{i}" for i in range(50)]
    idx, scores = leave_out(q, qk, c, ck, ct, k)
    expected = _brute_force(q, qk, c, ck, ct, k)
    assert idx.tolist() == expected
    assert np.allclose(scores, np.take_along_axis(q @ c.T, idx, axis=1), atol=1e-6)
    for row, key in zip(idx, qk):
        assert all(key not in ck[j] for j in row)
        assert len({ct[j] for j in row}) == k


def test_leaving_out_an_image_keeps_its_concepts_other_images() -> None:
    rng = np.random.default_rng(0)
    c = _unit(rng, 3, 8)
    keys = [("concept:a", "image:1"), ("concept:a", "image:2"), ("concept:b", "image:3")]
    texts = ["own caption", "own caption", "other"]
    by_image, _ = leave_out(c[:1], ["image:1"], c, keys, texts, 3)
    by_concept, _ = leave_out(c[:1], ["concept:a"], c, keys, texts, 3)
    assert sorted(j for j in by_image[0] if j >= 0) == [1, 2]  # the same concept's other image, not its own
    assert by_concept[0].tolist() == [2, -1, -1]


def test_leave_out_pads_when_too_few_candidates() -> None:
    rng = np.random.default_rng(0)
    c = _unit(rng, 4, 8)
    idx, _ = leave_out(c[:1], ["a"], c, [("a",), ("a",), ("b",), ("c",)], ["x", "y", "z", "z"], 3)
    assert idx[0, 0] in (2, 3) and idx[0, 1] == -1 and idx[0, 2] == -1
    with pytest.raises(ConfigError):
        leave_out(c, ["a"], c, [("a",)] * 4, ["x"] * 4, 2)
    with pytest.raises(ConfigError):
        leave_out(c, ["a"] * 4, c, [("a",)] * 4, ["x"] * 4, 0)


def _hit(i: int, text: str | None, group: str | None, score: float) -> Hit:
    return Hit(id=i, score=score, modality="text", text=text, uri=None, meta={}, group=group)


def test_distinct_captions_excludes_items_groups_duplicates_and_blanks() -> None:
    hits = [
        _hit(1, "bus", "g1", 0.9),
        _hit(2, "bus", "g2", 0.8),  # same text again
        _hit(3, "tram", "own", 0.7),  # the query's own group
        _hit(4, "  ", "g4", 0.6),
        _hit(5, "car", "g5", 0.5),  # the query's own item
        _hit(6, "train", None, 0.4),
        _hit(7, "boat", "g7", 0.3),
    ]
    out = distinct_captions(hits, 3, exclude_groups={"own"}, exclude_items={5})
    assert [(r.id, r.text) for r in out] == [(1, "bus"), (6, "train"), (7, "boat")]
    assert out[1].group == "item:6" and out[0].to_json() == {"id": 1, "text": "bus", "score": 0.9}


def test_consensus_picks_the_caption_closest_to_the_others() -> None:
    v = np.array([[1, 0, 0], [0, 1, 0], [0, 0.8, 0.6], [0, 0.6, 0.8]], dtype=np.float32)
    order = consensus_order(v)
    assert order[0] == 2 and order[-1] == 0  # 2 is close to both 1 and 3; 0 is orthogonal to all
    assert consensus_order(v[:2]).tolist() == [0, 1]  # two candidates: keep the retrieval order
    assert consensus_order(np.ones((3, 3), dtype=np.float32)).tolist() == [0, 1, 2]  # ties keep rank


def test_skin_tone_variants_count_as_their_base_concept() -> None:
    from mmgen.generate.caption_retrieval import concept_key

    assert concept_key("1F44B-1F3FB", {"skintone_base": "1F44B"}, 1) == "1F44B"
    assert concept_key("1F468-1F3FD-200D-1F393", {}, 2) == "1F468-200D-1F393"  # tone code points stripped
    assert concept_key("animals/cat", {}, 3) == "animals/cat" and concept_key(None, {}, 4) == "item:4"
    hits = [
        Hit(id=1, score=0.9, modality="text", text="waving hand: light skin tone", uri=None,
            meta={"skintone_base": "1F44B"}, group="1F44B-1F3FB"),
        Hit(id=2, score=0.8, modality="text", text="raised hand", uri=None, meta={}, group="270B"),
    ]  # fmt: skip
    assert [r.id for r in distinct_captions(hits, 2, exclude_groups={"1F44B"})] == [2]
