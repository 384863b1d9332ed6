"""Framing normalisation shared by training and inference: crop a drawing tight to its content.

Icon sets pad their pictures differently (OpenMoji leaves ~16% of the canvas empty, Twemoji none),
so a model that sees raw canvases learns the padding of a style. `crop_to_content` removes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mmgen.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

# A pixel is content when any channel is darker than this (anti-aliased edges on white stay out).
WHITE_THRESHOLD = 245
CROP_MODES = ("content", "none")


def content_bbox(img: Image.Image, threshold: int = WHITE_THRESHOLD) -> tuple[int, int, int, int] | None:
    """Bounding box (left, top, right, bottom) of the non-white pixels, or None for a blank picture."""
    from PIL import ImageChops, ImageOps

    # Inverted, content is bright; the brightest channel of a pixel is its darkest original one.
    r, g, b = ImageOps.invert(img.convert("RGB")).split()
    strongest = ImageChops.lighter(ImageChops.lighter(r, g), b)
    mask = strongest.point(lambda v: 255 if v > 255 - threshold else 0)
    return mask.getbbox()


def crop_to_content(img: Image.Image, pad: float = 0.04, threshold: int = WHITE_THRESHOLD) -> Image.Image:
    """Crop an RGB picture on white to the bounding box of its non-white pixels, square-padded on white.

    `pad` is the white margin added on every side, as a fraction of the content's longer side.
    A blank (all-white) picture is returned unchanged.
    """
    from PIL import Image

    if pad < 0:
        raise ConfigError(f"pad must be >= 0, got {pad}")
    rgb = img.convert("RGB") if img.mode != "RGB" else img
    box = content_bbox(rgb, threshold)
    if box is None:
        return rgb
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    side = max(width, height)
    side_padded = max(1, round(side * (1 + 2 * pad)))
    out = Image.new("RGB", (side_padded, side_padded), (255, 255, 255))
    out.paste(rgb.crop(box), ((side_padded - width) // 2, (side_padded - height) // 2))
    return out


def apply_crop(img: Image.Image, mode: str) -> Image.Image:
    """Apply a named crop mode (`content` or `none`), as recorded in a model manifest."""
    if mode == "content":
        return crop_to_content(img)
    if mode == "none":
        return img
    raise ConfigError(f"unknown crop mode {mode!r}; valid choices: {', '.join(CROP_MODES)}")


class ContentCrop:
    """A picklable transform step: `crop_to_content` before a model's own resize and normalise."""

    def __init__(self, pad: float = 0.04, threshold: int = WHITE_THRESHOLD) -> None:
        self.pad = pad
        self.threshold = threshold

    def __call__(self, img: Image.Image) -> Image.Image:
        return crop_to_content(img, self.pad, self.threshold)

    def __repr__(self) -> str:
        return f"ContentCrop(pad={self.pad}, threshold={self.threshold})"


def decode_one(path: str, image_size: int, crop: str) -> np.ndarray:
    """One image as the model sees it: decoded on white, cropped (`content`/`none`), resized to a square."""
    from PIL import Image

    from mmgen.data.images import MAX_SIDE_DEFAULT, load_image

    # Decode at the size the indexer does, so training and inference resize from the same pixels.
    img = apply_crop(load_image(path, MAX_SIDE_DEFAULT), crop)
    if img.size != (image_size, image_size):
        if img.width != img.height:  # crop "none": centre-crop the shorter side, as open_clip's transform does
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side))
        img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)
