"""Contact sheets: a labelled grid of prompts (rows) x generated samples, with the retrieved neighbours beside them."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

LABEL_WIDTH = 220
PAD = 6
NEIGHBOUR_SIDE = 48
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MUTED = (110, 110, 110)


@dataclass
class SheetRow:
    """One prompt's row: its label, its samples (uint8 (S, S, 3)) and, optionally, neighbour image files."""

    label: str
    samples: Sequence[np.ndarray]
    neighbours: Sequence[str] = field(default_factory=list)
    note: str = ""  # a second, muted label line (e.g. "seed 7, k=4")


def render_sheet(
    rows: Sequence[SheetRow], scale: int = 2, title: str = "", header: str = "generated"
) -> Image.Image:
    """The grid as one RGB picture: samples enlarged `scale` times (nearest neighbour: pixels stay honest).

    `header` labels the sample columns (above the first one); `title` is a line above everything.
    """
    from PIL import Image, ImageDraw

    if not rows:
        raise ConfigError("a sheet needs at least one row")
    if scale < 1:
        raise ConfigError(f"scale must be >= 1, not {scale}")
    sides = [int(np.asarray(s).shape[0]) for r in rows for s in r.samples]
    side = (max(sides) if sides else 64) * scale
    cols = max(len(r.samples) for r in rows)
    n_neigh = max((len(r.neighbours) for r in rows), default=0)
    neigh_cols = (n_neigh + 1) // 2 if n_neigh > 1 else n_neigh  # neighbours in two rows of small thumbnails
    neigh_width = neigh_cols * (NEIGHBOUR_SIDE + 2) + PAD if n_neigh else 0
    font, small = _fonts()
    title_h = 28 if title else 0
    header_h = 18
    width = LABEL_WIDTH + cols * (side + PAD) + PAD + neigh_width
    row_h = max(side, 2 * NEIGHBOUR_SIDE + 2) + PAD
    sheet = Image.new("RGB", (width, title_h + header_h + len(rows) * row_h + PAD), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((PAD, PAD), title, fill=TEXT, font=font)
    y = title_h
    draw.text((LABEL_WIDTH, y + 2), header, fill=MUTED, font=small)
    if n_neigh:
        draw.text((LABEL_WIDTH + cols * (side + PAD) + PAD, y + 2), "retrieved", fill=MUTED, font=small)
    y += header_h
    for row in rows:
        lines = textwrap.wrap(row.label, 26)[:4] or [""]
        for i, line in enumerate(lines):
            draw.text((PAD, y + 4 + 16 * i), line, fill=TEXT, font=font)
        if row.note:
            draw.text((PAD, y + 6 + 16 * len(lines)), row.note, fill=MUTED, font=small)
        x = LABEL_WIDTH
        for sample in row.samples:
            img = Image.fromarray(np.asarray(sample, dtype=np.uint8), "RGB")
            sheet.paste(img.resize((side, side), Image.Resampling.NEAREST), (x, y))
            x += side + PAD
        x = LABEL_WIDTH + cols * (side + PAD) + PAD
        for j, path in enumerate(row.neighbours):
            thumb = _thumbnail(path)
            sheet.paste(thumb, (x + (j // 2) * (NEIGHBOUR_SIDE + 2), y + (j % 2) * (NEIGHBOUR_SIDE + 2)))
        y += row_h
    return sheet


def save_sheet(
    rows: Sequence[SheetRow], path: Path, scale: int = 2, title: str = "", header: str = "generated"
) -> Path:
    """Render and write a sheet as PNG; returns the path."""
    path = path.expanduser()
    if path.suffix.lower() != ".png":
        raise ConfigError(f"the sheet is written as PNG: name it *.png, not {path.name}")
    sheet = render_sheet(rows, scale, title, header)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path, format="PNG")
    except OSError as exc:
        raise ConfigError(f"cannot write the sheet {path}: {exc}") from exc
    return path


def _thumbnail(path: str) -> Image.Image:
    from PIL import Image

    from mmgen.data.images import load_image
    from mmgen.errors import ImageLoadError

    try:
        img = load_image(path, max_side=NEIGHBOUR_SIDE * 2)
    except ImageLoadError:  # a neighbour whose file moved since indexing: a grey box, the sheet still renders
        return Image.new("RGB", (NEIGHBOUR_SIDE, NEIGHBOUR_SIDE), (200, 200, 200))
    img.thumbnail((NEIGHBOUR_SIDE, NEIGHBOUR_SIDE))
    box = Image.new("RGB", (NEIGHBOUR_SIDE, NEIGHBOUR_SIDE), BACKGROUND)
    box.paste(img, ((NEIGHBOUR_SIDE - img.width) // 2, (NEIGHBOUR_SIDE - img.height) // 2))
    return box


def _fonts() -> tuple[Any, Any]:
    from PIL import ImageFont

    return ImageFont.load_default(size=14), ImageFont.load_default(size=11)
