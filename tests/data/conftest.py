"""Fixtures for mmgen.data: tiny real files written with Pillow, and miniature corpus trees."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from mmgen.data.emoji import NPM_PACKAGES

# A black-outlined 72x72 OpenMoji-like SVG, transparent outside the shape.
SVG_DISC = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72" width="72" height="72">
<circle cx="36" cy="36" r="20" fill="{fill}" stroke="#000" stroke-width="2"/></svg>"""


@pytest.fixture
def write_png(tmp_path: Path) -> Callable[..., Path]:
    """Write a solid PNG of a given size/mode/colour under tmp_path and return its path."""

    def _write(name: str, size: tuple[int, int] = (8, 8), mode: str = "RGB", color: object = (255, 0, 0)) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new(mode, size, color).save(path)  # type: ignore[arg-type]
        return path

    return _write


def _package(root: Path, name: str, version: str) -> Path:
    pkg = root / "npm" / "node_modules" / name
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "package.json").write_text(json.dumps({"name": name, "version": version}), encoding="utf-8")
    return pkg


OPENMOJI_ROWS = [
    {
        "emoji": "🚌",
        "hexcode": "1F68C",
        "group": "travel-places",
        "subgroups": "transport-ground",
        "annotation": "bus",
        "tags": "bus, vehicle",
        "skintone": "",
        "skintone_base_hexcode": "",
    },
    {
        "emoji": "👍️",
        "hexcode": "1F44D",
        "group": "people-body",
        "subgroups": "hand-fingers-closed",
        "annotation": "thumbs up",
        "tags": "+1, hand, thumb, up",
        "skintone": "",
        "skintone_base_hexcode": "1F44D",
    },
    {
        "emoji": "👍🏻",
        "hexcode": "1F44D-1F3FB",
        "group": "people-body",
        "subgroups": "hand-fingers-closed",
        "annotation": "thumbs up: light skin tone",
        "tags": "",
        "skintone": 1,
        "skintone_base_hexcode": "1F44D",
    },
    {
        "emoji": "#️⃣",
        "hexcode": "0023-FE0F-20E3",
        "group": "symbols",
        "subgroups": "keycap",
        "annotation": "keycap: #",
        "tags": "keycap",
        "skintone": "",
        "skintone_base_hexcode": "",
    },
    {
        "emoji": "🇫🇷",
        "hexcode": "1F1EB-1F1F7",
        "group": "flags",
        "subgroups": "country-flag",
        "annotation": "flag: France",
        "tags": "flag",
        "skintone": "",
        "skintone_base_hexcode": "",
    },
    {
        "emoji": "",
        "hexcode": "E045",
        "group": "extras-openmoji",
        "subgroups": "brand",
        "annotation": "github",
        "tags": "",
        "skintone": "",
        "skintone_base_hexcode": "",
    },
]

TWEMOJI_ROWS = [
    {
        "name": "BUS",
        "unified": "1F68C",
        "image": "1f68c.png",
        "short_name": "bus",
        "short_names": ["bus"],
        "category": "Travel & Places",
        "subcategory": "transport-ground",
        "sort_order": 3,
    },
    {
        "name": "THUMBS UP SIGN",
        "unified": "1F44D",
        "image": "1f44d.png",
        "short_name": "+1",
        "short_names": ["+1", "thumbsup"],
        "category": "People & Body",
        "subcategory": "hand-fingers-closed",
        "sort_order": 1,
        "skin_variations": {
            "1F3FB": {"unified": "1F44D-1F3FB", "image": "1f44d-1f3fb.png"},
            "1F3FC": {"unified": "1F44D-1F3FC", "image": "1f44d-1f3fc.png"},
        },
    },
    {
        "name": "HASH KEY",
        "unified": "0023-FE0F-20E3",
        "image": "0023-fe0f-20e3.png",
        "short_name": "hash",
        "short_names": ["hash"],
        "category": "Symbols",
        "subcategory": "keycap",
        "sort_order": 2,
    },
    {
        "name": "HEAVY BLACK HEART",
        "unified": "2764-FE0F",
        "image": "2764-fe0f.png",
        "short_name": "heart",
        "short_names": ["heart"],
        "category": "Smileys & Emotion",
        "subcategory": "heart",
        "sort_order": 4,
    },
]


@pytest.fixture
def emoji_npm(tmp_path: Path) -> Path:
    """A data dir with the two npm packages installed (tiny): six OpenMoji SVGs per style, five Twemoji PNGs."""
    data = tmp_path / "data"
    om = _package(data, "openmoji", NPM_PACKAGES["openmoji"])
    (om / "data").mkdir()
    (om / "data" / "openmoji.json").write_text(json.dumps(OPENMOJI_ROWS), encoding="utf-8")
    for folder, fill in (("color", "#F1B31C"), ("black", "none")):
        (om / folder / "svg").mkdir(parents=True)
        for row in OPENMOJI_ROWS:
            (om / folder / "svg" / f"{row['hexcode']}.svg").write_text(SVG_DISC.format(fill=fill), encoding="utf-8")
    tw = _package(data, "emoji-datasource-twitter", NPM_PACKAGES["emoji-datasource-twitter"])
    (tw / "emoji.json").write_text(json.dumps(TWEMOJI_ROWS), encoding="utf-8")
    img = tw / "img" / "twitter" / "64"
    img.mkdir(parents=True)
    for name in ("1f68c.png", "1f44d.png", "1f44d-1f3fb.png", "1f44d-1f3fc.png", "0023-fe0f-20e3.png"):
        Image.new("RGBA", (64, 64), (0, 0, 255, 128)).save(img / name)  # 2764-fe0f.png stays missing
    return data


@pytest.fixture
def emoji_data(emoji_npm: Path) -> Path:
    """emoji_npm plus the rasterised OpenMoji PNGs, written with Pillow (fetch is tested on its own)."""
    data = emoji_npm
    for style in ("openmoji-color", "openmoji-black"):
        out = data / "emoji" / style
        out.mkdir(parents=True, exist_ok=True)
        for row in OPENMOJI_ROWS:
            Image.new("RGBA", (128, 128), (255, 200, 0, 255)).save(out / f"{row['hexcode']}.png")
    return data


OPENCLIPART_SVG = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
 xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
 width="10" height="10">
  <metadata>
    <rdf:RDF>
      <cc:Work rdf:about="">
        <dc:title>{title}</dc:title>
        <dc:description>{description}</dc:description>
        <dc:subject><rdf:Bag>{keywords}</rdf:Bag></dc:subject>
        <dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator>
        <cc:license rdf:resource="http://web.resource.org/cc/PublicDomain"/>
      </cc:Work>
    </rdf:RDF>
  </metadata>
  <rect width="10" height="10" fill="#c00"/>
</svg>"""


def _write_clipart(
    root: Path, rel: str, title: str, keywords: list[str], description: str = "", creator: str = "Someone"
) -> None:
    svg = root / "svg" / f"{rel}.svg"
    png = root / "png" / f"{rel}.png"
    svg.parent.mkdir(parents=True, exist_ok=True)
    png.parent.mkdir(parents=True, exist_ok=True)
    kws = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    svg.write_text(
        OPENCLIPART_SVG.format(title=title, description=description, keywords=kws, creator=creator), encoding="utf-8"
    )
    Image.new("RGB", (10, 10), (200, 0, 0)).save(png)


@pytest.fixture
def write_clipart() -> Callable[..., None]:
    """Return a writer of one drawing: svg/<rel>.svg with metadata and png/<rel>.png, under a root."""
    return _write_clipart
