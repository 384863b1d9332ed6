"""Folder source: image/caption pairs, image-only, text-only, bad captions, order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mmgen.data.folder import folder_records
from mmgen.errors import DataError


def test_folder_records(tmp_path: Path, write_png: Callable[..., Path]) -> None:
    write_png("b/cat.png")
    (tmp_path / "b" / "cat.txt").write_text("  a black\ncat \n", encoding="utf-8")
    write_png("a/dog.jpg")
    (tmp_path / "notes.txt").write_text("text only", encoding="utf-8")
    write_png("latin1.png")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "orphan.txt").write_bytes(b"\xff\xfe\x00")
    write_png("twin.png")
    write_png("twin.webp")
    write_png(".hidden/x.png")
    (tmp_path / "readme.md").write_text("ignored", encoding="utf-8")

    recs = {r.key: r for r in folder_records(tmp_path)}
    assert list(recs) == ["a/dog", "b/cat", "latin1", "notes", "orphan", "twin.png", "twin.webp"]
    assert recs["b/cat"].text == "a black cat" and recs["b/cat"].image == str(tmp_path / "b" / "cat.png")
    assert recs["a/dog"].text is None and recs["a/dog"].image == str(tmp_path / "a" / "dog.jpg")
    assert recs["notes"].image is None and recs["notes"].text == "text only"
    assert recs["latin1"].error is not None and "not valid UTF-8" in recs["latin1"].error
    assert recs["latin1"].image is not None  # the indexer reports it with its image path
    assert recs["orphan"].error is not None and recs["orphan"].image is None
    assert all(r.error is None for k, r in recs.items() if k not in ("latin1", "orphan"))
    assert [r.key for r in folder_records(tmp_path)] == list(recs)  # deterministic


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder not found"):
        list(folder_records(tmp_path / "nope"))
