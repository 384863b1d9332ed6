"""Encoder names: parsing, choices in errors, and a cheap package import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmgen.encoders import DEFAULT_TEXT_ENCODER, encoder_choices, load_encoder, resolve_encoder_name
from mmgen.errors import ConfigError, UnknownNameError


def test_import_is_cheap() -> None:
    code = (
        "import sys, mmgen.encoders; mmgen.encoders.encoder_choices(); "
        "mmgen.encoders.resolve_encoder_name('st:all-MiniLM-L6-v2'); "
        "print(sorted(m for m in ('torch', 'torchvision', 'open_clip', 'sentence_transformers', 'transformers') "
        "if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["clip:ViT-B-32", "ViT-B-32", "hf:foo", ""])
def test_unknown_prefix_lists_the_forms(name: str) -> None:
    with pytest.raises(UnknownNameError) as info:
        load_encoder(name)
    message = str(info.value)
    for form in ("st:PATH_OR_NAME", "openclip:ARCH/TAG", "openclip:PATH/TO/CHECKPOINT_DIR", "mmgen:NAME_OR_PATH"):
        assert form in message
    assert "openclip:ViT-B-32/TAG" in message


def test_choices_list_open_clip_architectures() -> None:
    choices = encoder_choices()
    assert DEFAULT_TEXT_ENCODER in choices
    assert "openclip:ViT-B-32/TAG" in choices
    assert "openclip:RN50/TAG" in choices


def test_empty_after_prefix() -> None:
    with pytest.raises(ConfigError, match="missing"):
        resolve_encoder_name("openclip:")


def test_name_forms_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpts").mkdir()
    tag = resolve_encoder_name("openclip:ViT-B-32/laion2b_s34b_b79k")
    assert (tag.kind, tag.source, tag.weights, tag.name) == (
        "openclip", "ViT-B-32", "laion2b_s34b_b79k", "openclip:ViT-B-32/laion2b_s34b_b79k"
    )
    ckpt = resolve_encoder_name("openclip:ViT-B-32/ckpts/model.pt")
    assert (ckpt.weights, ckpt.cwd) == ("ckpts/model.pt", str(tmp_path))
    folder = resolve_encoder_name("openclip:./ckpts")
    assert (folder.kind, folder.source, folder.name) == ("openclip-dir", str(tmp_path / "ckpts"), "openclip:./ckpts")
    assert resolve_encoder_name("openclip:ckpts").kind == "openclip-dir"  # an existing folder wins over an arch
    assert resolve_encoder_name(" st:all-MiniLM-L6-v2 ").name == DEFAULT_TEXT_ENCODER
    hub = resolve_encoder_name("st:org/some-model")
    assert (hub.source, hub.name) == ("org/some-model", "st:org/some-model")
