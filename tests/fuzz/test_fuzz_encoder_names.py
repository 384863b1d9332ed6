"""Fuzz encoder names (`resolve_encoder_name`): a spec, or UnknownNameError / ConfigError / ModelLoadError.

Only the parsing and checking half runs: nothing here builds an encoder or imports torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from mmgen.encoders import EncoderSpec, resolve_encoder_name
from mmgen.errors import ConfigError, ModelLoadError, UnknownNameError

TYPED = (UnknownNameError, ConfigError, ModelLoadError)
PREFIXES = ["st", "openclip", "mmgen", "ST", "clip", "", " st", "mmgen "]
SEGMENTS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["ViT-B-32", "laion2b_s34b_b79k", "all-MiniLM-L6-v2", "sentence-transformers", "tiny", "ckpt.pt", ".", "..",
         "~", "~root", "~mmgen-no-such-user", "", " ", "\x00", "\udc80", "a" * 300, "é😀", "*", "[", "**", "file:"]
    ),
)  # fmt: skip
PATH_STARTS = ["", "/", "./", "../", "~/", "~", "//", "file://"]


@st.composite
def encoder_name(draw: st.DrawFn) -> str:
    """`PREFIX:REST`, REST a random path-ish string (or, sometimes, any text at all)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40))
    parts = draw(st.lists(SEGMENTS, max_size=draw(st.sampled_from([4, 4, 40]))))
    rest = draw(st.sampled_from(PATH_STARTS)) + "/".join(parts)
    return f"{draw(st.sampled_from(PREFIXES))}{draw(st.sampled_from([':', ':', '::', '']))}{rest}"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace `models/` folder with one trained encoder (a config file is all resolving needs)."""
    models = tmp_path_factory.mktemp("models")
    (models / "tiny").mkdir()
    (models / "tiny" / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}), encoding="utf-8")
    return models


@given(encoder_name())
def test_names_resolve_or_fail_with_a_typed_error(models_dir: Path, name: str) -> None:
    try:
        spec = resolve_encoder_name(name, models_dir=models_dir)
    except TYPED as e:
        event(type(e).__name__)
        assert str(e)
        return
    event(f"spec {spec.kind}")
    assert isinstance(spec, EncoderSpec)
    assert spec.kind in ("st", "openclip", "openclip-dir")
    assert spec.name.split(":", 1)[0] in ("st", "openclip", "mmgen")
    if spec.kind == "openclip-dir":
        assert os.path.isabs(spec.source)
    if spec.kind == "openclip" and spec.cwd is not None:
        assert spec.weights and os.path.isabs(spec.cwd)


@given(st.text(max_size=60))
def test_any_text_resolves_or_fails_with_a_typed_error(models_dir: Path, name: str) -> None:
    try:
        resolve_encoder_name(name, models_dir=models_dir)
    except TYPED:
        pass


# ---- regressions: paths the OS refuses used to escape as OSError, ValueError or RuntimeError ----
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("st:" + "a" * 5_000, "File name too long"),  # OSError (ENAMETOOLONG) from Path.is_dir
        ("openclip:ViT-B-32/" + "a" * 5_000, "File name too long"),
        ("mmgen:" + "a/" * 3_000, "File name too long"),
        ("openclip:" + "../" * 3_000, "File name too long"),
        ("st:/a\x00b", "embedded null byte"),  # ValueError from Path.resolve
        ("mmgen:/a\x00b", "embedded null byte"),
        ("st:~mmgen-no-such-user/x", "cannot expand '~'"),  # RuntimeError from Path.expanduser
        ("openclip:~mmgen-no-such-user", "cannot expand '~'"),
        ("openclip:ViT-B-32/~mmgen-no-such-user/a.pt", "cannot expand '~'"),
    ],
    ids=lambda v: v[:30] if isinstance(v, str) else v,
)
def test_unusable_paths_are_model_load_errors(models_dir: Path, name: str, reason: str) -> None:
    with pytest.raises(ModelLoadError, match=reason):
        resolve_encoder_name(name, models_dir=models_dir)
