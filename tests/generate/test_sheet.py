"""Contact sheets: layout, honest (nearest-neighbour) enlargement, neighbour thumbnails, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmgen.errors import ConfigError
from mmgen.generate.sheet import LABEL_WIDTH, PAD, SheetRow, render_sheet, save_sheet


def sample(seed: int, side: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_samples_are_pasted_enlarged_pixel_for_pixel(tmp_path: Path) -> None:
    neighbour = tmp_path / "n.png"
    Image.new("RGB", (30, 20), (10, 200, 30)).save(neighbour)
    rows = [
        SheetRow("a red apple", [sample(0), sample(1), sample(2)], [str(neighbour)] * 4, note="seed 1"),
        SheetRow("a very long prompt that has to wrap over several lines of the label column", [sample(3)]),
    ]
    sheet = render_sheet(rows, scale=3, title="title")
    assert sheet.mode == "RGB" and sheet.width > LABEL_WIDTH + 3 * (24 + PAD)
    pixels = np.asarray(sheet)
    # find the first sample by its exact enlarged content
    big = np.asarray(Image.fromarray(sample(0)).resize((24, 24), Image.Resampling.NEAREST))
    ys = [y for y in range(pixels.shape[0] - 24) if np.array_equal(pixels[y : y + 24, LABEL_WIDTH : LABEL_WIDTH + 24], big)]
    assert len(ys) == 1
    # the neighbour thumbnails are there (the green of the neighbour picture appears right of the samples)
    right = pixels[:, LABEL_WIDTH + 3 * (24 + PAD) :]
    assert np.any(np.all(right == (10, 200, 30), axis=-1))


def test_save_sheet_checks_its_arguments(tmp_path: Path) -> None:
    path = save_sheet([SheetRow("x", [sample(0)], ["/no/such/file.png"])], tmp_path / "sub" / "s.png")
    assert path.is_file()  # a neighbour file that vanished becomes a grey box, not a failure
    with pytest.raises(ConfigError, match="PNG"):
        save_sheet([SheetRow("x", [sample(0)])], tmp_path / "s.jpg")
    with pytest.raises(ConfigError, match="at least one row"):
        render_sheet([])
    with pytest.raises(ConfigError, match="scale"):
        render_sheet([SheetRow("x", [sample(0)])], scale=0)
