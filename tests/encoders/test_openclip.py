"""open_clip encoders loaded by name from a tiny seeded model saved as a checkpoint file and a folder."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmgen.encoders import Encoder, load_encoder
from mmgen.encoders.openclip import inert_pad_id, trim_padding
from mmgen.errors import ConfigError, ModelLoadError, UnknownNameError


def _reference_text(model: Any, encoder: Encoder, texts: list[str]) -> np.ndarray:
    """What the in-memory model produces, normalised, without going through mmgen's loading."""
    import torch

    with torch.inference_mode():
        out = model.encode_text(encoder.tokenizer(texts)).numpy()  # type: ignore[attr-defined]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _reference_image(model: Any, encoder: Encoder, images: list[Any]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        pixels = torch.stack([encoder.preprocess(im) for im in images])  # type: ignore[attr-defined]
        out = model.encode_image(pixels).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# Mixed lengths: empty, a few tokens, one past MiniLM's 64-token context (truncated), punctuation.
MIXED_TEXTS = [
    "a cat",
    "",
    "a red apple on a wooden table next to a glass of water, photographed in soft morning light",
    "bus",
    " ".join(f"word{i}" for i in range(80)),
    "thumbs up: medium skin tone!",
    "a dog",
]


def test_trim_padding_keeps_the_last_real_column() -> None:
    import torch

    # Pad id 0 inside a row (CLIP's "!" is token 0) must not shorten it.
    tokens = torch.tensor([[5, 0, 7, 0, 0, 0], [3, 0, 0, 0, 0, 0]])
    assert trim_padding(tokens).tolist() == [[5, 0, 7], [3, 0, 0]]
    assert trim_padding(torch.zeros(2, 6, dtype=torch.long)).shape == (2, 1)
    assert trim_padding(torch.tensor([[1, 2, 2]]), pad_id=2).tolist() == [[1]]


def test_minilm_tower_trimmed_matches_full_padding_in_input_order(minilm_clip_dir: Path) -> None:
    import torch

    encoder = load_encoder(f"openclip:{minilm_clip_dir}", device="cpu")
    model, tokenizer = encoder.model, encoder.tokenizer  # type: ignore[attr-defined]
    assert inert_pad_id(model) == 0
    full = tokenizer(MIXED_TEXTS)
    assert full.shape[1] == 64
    assert trim_padding(tokenizer(["a cat", "a dog"])).shape[1] < 8  # the padding really is dropped
    with torch.inference_mode():
        reference = model.encode_text(full).numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    for batch_size in (1, 3, 256):
        np.testing.assert_allclose(encoder.encode_text(MIXED_TEXTS, batch_size=batch_size), reference, atol=1e-5)
    fused = encoder._fused  # type: ignore[attr-defined]
    assert fused is not None  # batches of one take the fused BERT layers, padded batches too on oneDNN's
    if fused.batches:
        with torch.profiler.profile() as prof:
            encoder.encode_text(MIXED_TEXTS, batch_size=256)
        assert {e.key: e.count for e in prof.key_averages()}.get("mkldnn::_linear_pointwise") == 24
    np.testing.assert_allclose(encoder.encode_text(MIXED_TEXTS[-1:]), reference[-1:], atol=1e-5)
    order = np.random.default_rng(0).permutation(len(MIXED_TEXTS))
    shuffled = encoder.encode_text([MIXED_TEXTS[i] for i in order], batch_size=3)
    np.testing.assert_allclose(shuffled, reference[order], atol=1e-5)


def test_own_text_tower_is_not_trimmed(tiny_encoder: Encoder) -> None:
    # open_clip's CLIP text tower adds a full-length causal mask and positions: padding is part of its input.
    assert inert_pad_id(tiny_encoder.model) is None  # type: ignore[attr-defined]


def test_shapes_dtype_and_unit_rows(texts: list[str], tiny_encoder: Encoder, images: list[Any]) -> None:
    assert tiny_encoder.dim == 16
    assert tiny_encoder.modalities == frozenset({"image", "text"})
    for vectors, n in ((tiny_encoder.encode_text(texts), len(texts)), (tiny_encoder.encode_image(images), len(images))):
        assert vectors.shape == (n, 16)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_empty_input_gives_zero_rows(tiny_encoder: Encoder) -> None:
    assert tiny_encoder.encode_text([]).shape == (0, 16)
    assert tiny_encoder.encode_image([]).dtype == np.float32


def test_bad_arguments_raise_config_error(tiny_encoder: Encoder) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        tiny_encoder.encode_text(["a"], batch_size=0)
    with pytest.raises(ConfigError, match="sequence of strings"):
        tiny_encoder.encode_text("a cat")  # type: ignore[arg-type]


def test_batch_size_does_not_change_results(texts: list[str], tiny_encoder: Encoder, images: list[Any]) -> None:
    np.testing.assert_allclose(
        tiny_encoder.encode_text(texts, batch_size=1), tiny_encoder.encode_text(texts, batch_size=8), atol=1e-5
    )
    np.testing.assert_allclose(
        tiny_encoder.encode_image(images, batch_size=1), tiny_encoder.encode_image(images, batch_size=8), atol=1e-5
    )


def test_deterministic(texts: list[str], tiny_encoder: Encoder, images: list[Any]) -> None:
    np.testing.assert_array_equal(tiny_encoder.encode_text(texts), tiny_encoder.encode_text(texts))
    np.testing.assert_array_equal(tiny_encoder.encode_image(images), tiny_encoder.encode_image(images))


def test_loads_the_saved_weights(texts: list[str], tiny_clip: Any, tiny_encoder: Encoder, images: list[Any]) -> None:
    text = tiny_encoder.encode_text(texts)
    np.testing.assert_allclose(text, _reference_text(tiny_clip.model, tiny_encoder, texts), atol=1e-6)
    np.testing.assert_allclose(
        tiny_encoder.encode_image(images), _reference_image(tiny_clip.model, tiny_encoder, images), atol=1e-6
    )
    other = load_encoder(f"openclip:{tiny_clip.other_folder}", device="cpu")
    assert np.abs(other.encode_text(texts) - text).max() > 0.1


def test_checkpoint_file_form_matches_folder_form(
    texts: list[str], tiny_clip: Any, tiny_encoder: Encoder, images: list[Any]
) -> None:
    encoder = load_encoder(tiny_clip.ckpt_name, device="cpu")
    assert encoder.name == tiny_clip.ckpt_name
    np.testing.assert_array_equal(encoder.encode_text(texts), tiny_encoder.encode_text(texts))
    np.testing.assert_array_equal(encoder.encode_image(images), tiny_encoder.encode_image(images))


def test_relative_checkpoint_resolves_against_cwd(tiny_clip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_clip.checkpoint.parent)
    encoder = load_encoder(f"openclip:{tiny_clip.arch}/{tiny_clip.checkpoint.name}", device="cpu")
    assert encoder.name == f"openclip:{tiny_clip.arch}/tiny.pt"  # as written, so manifests stay portable
    assert encoder.checksum() == hashlib.sha256(tiny_clip.checkpoint.read_bytes()).hexdigest()


def test_checksums_identify_the_weights(tiny_clip: Any, tiny_encoder: Encoder) -> None:
    file_encoder = load_encoder(tiny_clip.ckpt_name, device="cpu")
    assert file_encoder.checksum() == hashlib.sha256(tiny_clip.checkpoint.read_bytes()).hexdigest()
    assert tiny_encoder.checksum() == tiny_encoder.checksum()
    assert len(tiny_encoder.checksum()) == 64
    other = load_encoder(f"openclip:{tiny_clip.other_folder}", device="cpu")
    assert other.checksum() != tiny_encoder.checksum()


def test_folder_checksum_ignores_files_beside_the_weights(tiny_clip: Any, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_clip.folder, tmp_path / "copy")
    (copy / "manifest.json").write_text(json.dumps({"checksum": "anything"}))
    encoder = load_encoder(f"openclip:{copy}", device="cpu")
    assert encoder.checksum() == load_encoder(tiny_clip.dir_name, device="cpu").checksum()


def test_loading_is_cached_per_name_and_device(tiny_clip: Any, tiny_encoder: Encoder) -> None:
    assert load_encoder(tiny_clip.dir_name, device="cpu") is tiny_encoder


def test_mmgen_names_a_trained_model_in_the_workspace(
    texts: list[str], tiny_clip: Any, tiny_encoder: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMGEN_WORKSPACE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="no trained encoders"):
        load_encoder("mmgen:tiny", device="cpu")
    shutil.copytree(tiny_clip.folder, tmp_path / "models" / "tiny")
    encoder = load_encoder("mmgen:tiny", device="cpu")
    assert encoder.name == "mmgen:tiny"
    np.testing.assert_array_equal(encoder.encode_text(texts), tiny_encoder.encode_text(texts))
    with pytest.raises(UnknownNameError, match="mmgen:tiny"):
        load_encoder("mmgen:nope", device="cpu")
    by_path = load_encoder(f"mmgen:{tmp_path / 'models' / 'tiny'}", device="cpu")
    assert by_path.checksum() == encoder.checksum()


def test_missing_checkpoint_file(tmp_path: Path, tiny_clip: Any) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_encoder(f"openclip:{tiny_clip.arch}/{tmp_path / 'missing.pt'}", device="cpu")


def test_checkpoint_that_does_not_fit_the_architecture(tmp_path: Path, tiny_clip: Any) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot load weights"):
        load_encoder(f"openclip:{tiny_clip.arch}/{bad}", device="cpu")


def test_folder_without_weights_or_config(tmp_path: Path, tiny_clip: Any) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="open_clip_config.json"):
        load_encoder(f"openclip:{tmp_path / 'empty'}", device="cpu")
    shutil.copy(tiny_clip.folder / "open_clip_config.json", tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="no weights"):
        load_encoder(f"openclip:{tmp_path / 'empty'}", device="cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_encoder(f"openclip:{tmp_path / 'absent'}", device="cpu")


def test_checkpoint_file_without_architecture(tiny_clip: Any) -> None:
    with pytest.raises(ModelLoadError, match="needs its architecture"):
        load_encoder(f"openclip:{tiny_clip.checkpoint}", device="cpu")


def test_architecture_without_weights_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="never randomly initialised") as info:
        load_encoder("openclip:ViT-B-32", device="cpu")
    assert "laion2b_s34b_b79k" in str(info.value)


def test_unknown_architecture_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_encoder("openclip:ViT-Q-99/laion2b_s34b_b79k", device="cpu")
    assert "ViT-B-32" in info.value.choices
    assert "ViT-B-32" in str(info.value)


def test_unknown_tag_lists_tags() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_encoder("openclip:ViT-B-32/no_such_tag", device="cpu")
    assert "laion2b_s34b_b79k" in info.value.choices


def test_failed_download_is_an_error_not_a_random_model() -> None:
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_pytorch_model.bin"), str):
        pytest.skip("these weights are in the local Hugging Face cache")
    with pytest.raises(ModelLoadError, match="could not be fetched"):
        load_encoder("openclip:ViT-B-32/laion2b_s34b_b79k", device="cpu")
