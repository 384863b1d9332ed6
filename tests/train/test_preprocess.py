"""crop_to_content: tight crop to the non-white pixels, square-padded on white."""

from __future__ import annotations

import numpy as np
import pytest

from mmgen.data.preprocess import apply_crop, content_bbox, crop_to_content
from mmgen.errors import ConfigError


def canvas(w: int, h: int, box: tuple[int, int, int, int], colour: tuple[int, int, int] = (200, 0, 0)) -> object:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (w, h), "white")
    ImageDraw.Draw(im).rectangle(box, fill=colour)
    return im


def test_bbox_of_non_white_pixels() -> None:
    assert content_bbox(canvas(100, 80, (10, 20, 39, 29))) == (10, 20, 40, 30)
    assert content_bbox(canvas(10, 10, (0, 0, 0, 0), colour=(255, 255, 255))) is None
    # near-white anti-aliasing (above the threshold) is not content
    assert content_bbox(canvas(50, 50, (5, 5, 9, 9), colour=(250, 250, 250))) is None


def test_crop_is_square_padded_and_centred() -> None:
    out = crop_to_content(canvas(200, 100, (50, 40, 109, 59)), pad=0.1)  # content 60x20
    assert out.mode == "RGB"
    assert out.size == (72, 72)  # 60 * (1 + 2 * 0.1)
    pixels = np.asarray(out)
    rows = np.where((pixels < 245).any(axis=(1, 2)))[0]
    cols = np.where((pixels < 245).any(axis=(0, 2)))[0]
    assert (cols[0], cols[-1]) == (6, 65)  # 60 wide, 6 px margins
    assert (rows[0], rows[-1]) == (26, 45)  # 20 tall, centred vertically
    assert tuple(pixels[0, 0]) == (255, 255, 255)


def test_framing_no_longer_matters() -> None:
    small = crop_to_content(canvas(64, 64, (20, 20, 43, 43)))
    big = crop_to_content(canvas(64, 64, (2, 2, 61, 61)).resize((24, 24)))
    assert abs(small.width - 25) <= 1 and abs(big.width - 25) <= 1


def test_blank_and_pad_and_modes() -> None:
    from PIL import Image

    blank = Image.new("RGB", (30, 20), "white")
    assert crop_to_content(blank).size == (30, 20)
    with pytest.raises(ConfigError):
        crop_to_content(blank, pad=-1)
    assert apply_crop(blank, "none") is blank
    with pytest.raises(ConfigError, match="crop mode"):
        apply_crop(blank, "edges")
