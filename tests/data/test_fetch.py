"""Fetching: OpenMoji rasterisation (real libvips, tiny tree), OpenClipart location, missing tools."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from mmgen.data.fetch import fetch_emoji, fetch_openclipart
from mmgen.data.sources import open_sources
from mmgen.errors import DataError, MissingDependencyError

def test_fetch_emoji_rasterises_then_skips(emoji_npm: Path) -> None:
    counts = fetch_emoji(emoji_npm, progress=False)
    assert counts["npm_installed"] is False  # pinned versions already there: npm is not run
    assert counts["rendered"] == 12 and counts["up_to_date"] == 0 and counts["openmoji-color"] == 6
    png = emoji_npm / "emoji" / "openmoji-color" / "0023-FE0F-20E3.png"
    with Image.open(png) as im:
        assert im.size == (128, 128) and im.mode == "RGBA"
        assert im.getpixel((0, 0))[3] == 0 and im.getpixel((64, 64))[:3] == (0xF1, 0xB3, 0x1C)
    assert not [p for p in png.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    again = fetch_emoji(emoji_npm, progress=False)
    assert again["rendered"] == 0 and again["up_to_date"] == 12
    svg = emoji_npm / "npm/node_modules/openmoji/color/svg/1F68C.svg"
    os.utime(svg, (png.stat().st_mtime + 10, png.stat().st_mtime + 10))  # an updated SVG is rendered again
    assert fetch_emoji(emoji_npm, progress=False)["rendered"] == 1
    assert [s.corpus for s in open_sources("emoji", emoji_npm)] == ["openmoji-color", "openmoji-black", "twemoji"]


def test_fetch_emoji_reports_broken_svgs(emoji_npm: Path) -> None:
    (emoji_npm / "npm/node_modules/openmoji/black/svg/1F68C.svg").write_text("<svg", encoding="utf-8")
    with pytest.raises(DataError, match="1 of 12 OpenMoji SVGs failed to render"):
        fetch_emoji(emoji_npm, progress=False)


def test_fetch_emoji_needs_tools(emoji_npm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert fetch_emoji(emoji_npm, progress=False)["rendered"] == 12  # rendering needs no external tool
    with pytest.raises(MissingDependencyError, match="npm"):
        fetch_emoji(tmp_path / "fresh", progress=False)  # nothing installed yet and no npm on PATH


def test_fetch_openclipart_records_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "oc"
    (root / "png" / "animals").mkdir(parents=True)
    (root / "svg" / "animals").mkdir(parents=True)
    Image.new("RGB", (2, 2)).save(root / "png" / "animals" / "a.png")
    (root / "svg" / "animals" / "a.svg").write_text("<svg/>", encoding="utf-8")
    monkeypatch.setenv("MMGEN_OPENCLIPART_DIR", str(root))
    counts = fetch_openclipart(tmp_path / "data")
    assert counts["png_paths"] == 1 and counts["svg_paths"] == 1 and counts["installed"] is False
    assert json.loads((tmp_path / "data" / "openclipart.json").read_text())["root"] == str(root)
    monkeypatch.setenv("MMGEN_OPENCLIPART_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataError, match="has no svg/ and png/"):
        fetch_openclipart(tmp_path / "data")
