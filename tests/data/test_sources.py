"""The SOURCE factory: names, folders, manifests, unknown specs, unfetched corpora, light import."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mmgen.data import SOURCE_NAMES, Record, data_dir_default, open_sources
from mmgen.errors import DataError, UnknownNameError


def test_emoji_names_expand(emoji_data: Path) -> None:
    assert [s.corpus for s in open_sources("emoji", emoji_data)] == ["openmoji-color", "openmoji-black", "twemoji"]
    assert [s.corpus for s in open_sources("openmoji", emoji_data)] == ["openmoji-color", "openmoji-black"]
    (twemoji,) = open_sources("twemoji", emoji_data)
    assert twemoji.spec == "twemoji" and twemoji.kind == "emoji" and twemoji.licence is not None
    assert len(list(twemoji.records())) == 6
    assert {"emoji", "openmoji", "openmoji-color", "openmoji-black", "twemoji", "openclipart"} <= set(SOURCE_NAMES)
    assert {"emoji-styles", "fluent-emoji", "streamline-emojis", "icons", "mdi", "game-icons"} <= set(SOURCE_NAMES)
    with pytest.raises(DataError, match="mmgen data fetch iconify:mdi"):
        open_sources("icons", emoji_data)  # a named set that is not fetched says how to fetch it


def test_folder_and_manifest_sources(tmp_path: Path, write_png: Callable[..., Path]) -> None:
    write_png("imgs/a.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "x", "text": "hi"}) + "\n", encoding="utf-8")
    (folder,) = open_sources(str(tmp_path / "imgs"))
    assert folder.corpus == str((tmp_path / "imgs").resolve()) and folder.kind == "folder"
    assert [r.key for r in folder.records()] == ["a"]
    (manifest,) = open_sources(str(tmp_path / "m.jsonl"))
    assert manifest.corpus == str((tmp_path / "m.jsonl").resolve()) and manifest.kind == "manifest"
    assert list(manifest.records()) == [Record(key="x", text="hi")]


def test_unknown_and_missing_specs(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError) as info:
        open_sources("emojis", tmp_path)
    assert "openclipart" in info.value.choices and "<folder>" in info.value.choices
    with pytest.raises(DataError, match="manifest not found"):
        open_sources(str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match="folder not found"):
        open_sources(str(tmp_path / "nope") + "/")


def test_unfetched_corpora_name_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="mmgen data fetch emoji"):
        open_sources("emoji", tmp_path)
    monkeypatch.setenv("MMGEN_OPENCLIPART_DIR", str(tmp_path / "no-openclipart"))
    with pytest.raises(DataError, match="mmgen data fetch openclipart"):
        open_sources("openclipart", tmp_path)


def test_data_dir_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMGEN_DATA", str(tmp_path))
    assert data_dir_default() == tmp_path.resolve()
    monkeypatch.delenv("MMGEN_DATA")
    assert data_dir_default() == (Path.cwd() / "data").resolve()


def test_import_is_light() -> None:
    code = (
        "import sys, mmgen.data; from mmgen.data import open_sources, Record, read_records;"
        "print(sorted(m for m in ('PIL', 'pyvips', 'numpy', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
