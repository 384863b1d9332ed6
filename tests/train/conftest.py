"""A tiny synthetic captioned corpus (coloured shapes) and a tiny image tower config for training tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220), "orange": (250, 150, 20)}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "bar")
TINY_TOWER = {"vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8}}


def draw_shape(shape: str, colour: tuple[int, int, int], outline: bool, size: int = 48) -> object:
    """One shape on a transparent canvas with a margin (filled, or outlined in black)."""
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    lo, hi, mid = size // 6, size - size // 6, size // 2
    style = {"fill": colour + (255,), "outline": (0, 0, 0, 255) if outline else None, "width": 3 if outline else 0}
    if shape == "circle":
        d.ellipse([lo, lo, hi, hi], **style)
    elif shape == "square":
        d.rectangle([lo, lo, hi, hi], **style)
    elif shape == "triangle":
        d.polygon([(mid, lo), (hi, hi), (lo, hi)], **style)
    elif shape == "diamond":
        d.polygon([(mid, lo), (hi, mid), (mid, hi), (lo, mid)], **style)
    elif shape == "cross":
        d.rectangle([lo, mid - 4, hi, mid + 4], fill=colour + (255,))
        d.rectangle([mid - 4, lo, mid + 4, hi], fill=colour + (255,))
    else:
        d.rectangle([lo, mid - 5, hi, mid + 5], **style)
    return im


@pytest.fixture(scope="session")
def shapes_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 concepts (colour x shape) as a JSONL manifest, plus a text-only record and a corrupt image."""
    root = tmp_path_factory.mktemp("shapes")
    rows = []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            name = f"{colour}-{shape}"
            draw_shape(shape, rgb, outline=False).save(root / f"{name}.png")
            rows.append(
                {
                    "id": name,
                    "image": f"{name}.png",
                    "text": f"a {colour} {shape}",
                    "group": name,
                    "meta": {"captions": [f"a {colour} {shape}", f"a {colour} {shape}, shape, {colour}"]},
                }
            )
    rows.append({"id": "text-only", "text": "a caption with no picture", "group": "text-only"})
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    rows.append({"id": "corrupt", "image": "corrupt.png", "text": "a broken picture", "group": "corrupt"})
    manifest = root / "shapes.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


@pytest.fixture(scope="session")
def tiny_tower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An open_clip model config with a very small ModifiedResNet image tower for 32x32 input."""
    path = tmp_path_factory.mktemp("towers") / "tiny-convnet.json"
    path.write_text(json.dumps(TINY_TOWER), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def draw() -> Any:
    """The shape drawing function (shape, rgb, outline) -> RGBA image."""
    return draw_shape
