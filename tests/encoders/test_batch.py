"""`mmgen.encoders.batch`: texts embedded in wide length-sorted windows give the vectors of plain batches."""

from __future__ import annotations

import numpy as np
import pytest

from mmgen.encoders import Encoder
from mmgen.encoders import batch as batch_mod
from mmgen.encoders.batch import embed_batch, prefill_texts


class Counting(Encoder):
    """A real encoder, with the texts each call embeds written down."""

    def __init__(self, inner: Encoder) -> None:
        super().__init__()
        self.inner, self.name, self.dim, self.modalities = inner, inner.name, inner.dim, inner.modalities
        self.calls: list[list[str]] = []

    def _encode_text(self, texts: list[str], batch_size: int) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.encode_text(texts, batch_size)

    def _compute_checksum(self) -> str:
        return self.inner.checksum()


TEXTS = ["a red apple", "a bus", "a red apple", "an apple that is red, drawn flat with a much longer caption", "ü 漢字"]


def test_prefilled_window_gives_the_vectors_of_plain_batches(minilm: Encoder) -> None:
    counting = Counting(minilm)
    cache: dict[str, np.ndarray] = {}
    assert prefill_texts(counting, TEXTS, cache) >= 0.0
    assert counting.calls == [list(dict.fromkeys(TEXTS))]  # one call, each distinct text once
    out = embed_batch(counting, [["text"] for _ in TEXTS], TEXTS, [None] * len(TEXTS), cache)
    assert len(counting.calls) == 1  # the batch found every text in the cache
    owners, vectors = out.rows["text"]
    assert owners == list(range(len(TEXTS)))
    plain = embed_batch(minilm, [["text"] for _ in TEXTS], TEXTS, [None] * len(TEXTS), {})
    np.testing.assert_allclose(vectors, plain.rows["text"][1], atol=1e-5)
    np.testing.assert_allclose(vectors, minilm.encode_text(TEXTS, batch_size=1), atol=1e-5)


def test_a_full_cache_is_emptied_before_it_would_overflow(minilm: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_mod, "TEXT_CACHE_MAX", 3)
    cache: dict[str, np.ndarray] = {}
    prefill_texts(minilm, TEXTS[:2], cache)
    assert set(cache) == {"a red apple", "a bus"}
    out = embed_batch(minilm, [["text"]] * 3, TEXTS[2:], [None] * 3, cache)  # 2 new texts: the cache starts over
    assert len(cache) <= 3
    np.testing.assert_allclose(out.rows["text"][1], minilm.encode_text(TEXTS[2:]), atol=1e-5)
