"""A second look at near pairs: are two pictures the same drawing, not merely the same concept?

Vectors place two styles of one concept close together (OpenMoji's line-only and filled versions
of a glyph score above 0.95), so `mmgen dedup` confirms each pair its cosine finds by the pictures
themselves. Each picture becomes a *structure signature*: decoded on white, cropped to its
foreground (what differs from its border colour), then for each of a few centre-crop scales
box-resized to SIDE x SIDE, as two maps, each standardised (zero mean, unit norm):
- grey level (luma), where the drawing's lines and shading are;
- chroma (max - min of R, G, B), where its colour is, whatever the hue. A map without contrast
  (a black-and-white picture) is flat, and kept as zeros.

Two pictures' structure score is the best, over the scales of either side and `b` as drawn or
mirrored, of the mean of the two maps' Pearson correlations; when both pictures have flat chroma
(both black and white) the grey map alone counts. A colour picture against a black-and-white one
scores at most 0.5.

The score is unchanged by a resize, a re-encode, a brightness change, a hue turn and a mirror, and
moves little under a small crop, while a drawing filled in (or emptied), another pose or another
layout lowers it. A pair is kept when its score is at least `min_structure`.

Pictures that cannot be read (a moved file, an item with no file) cannot be checked, nor can two
pictures without any contrast (blank, or one flat colour): their pairs are kept on the cosine alone
and counted as unchecked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.errors import ConfigError, ImageLoadError

if TYPE_CHECKING:
    from PIL import Image

SIDE = 16  # signature pixels per side
SCALES = (1.0, 0.9)  # centre crops compared (fractions of the foreground box's side)
CHANNELS = ("grey", "chroma")
DECODE_SIDE = 128  # pictures are decoded this small for their signature
FOREGROUND_TOLERANCE = 40  # levels (any of R, G, B) from the border colour still background (JPEG rings reach ~25)
FLAT = 2.0  # a map whose standard deviation is under this many levels has no contrast
# Chosen on the development set (benchmarks/dedup_pixel_check.py, seed 1); see the README.
DEFAULT_MIN_STRUCTURE = 0.85


def check_min_structure(value: float) -> float:
    """The bound as a float in [-1, 1]; ConfigError otherwise."""
    try:
        bound = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"the structure bound must be a correlation in [-1, 1], not {value!r}") from None
    if not -1.0 <= bound <= 1.0:  # NaN fails this too
        raise ConfigError(
            f"the structure bound is a correlation in [-1, 1], not {value!r}; the default is {DEFAULT_MIN_STRUCTURE}"
        )
    return bound


def signature(
    img: Image.Image, side: int = SIDE, scales: Sequence[float] = SCALES, channels: Sequence[str] = CHANNELS
) -> np.ndarray:
    """A picture's structure signature: (len(channels), len(scales), side * side) float32 rows.

    Each row is zero-mean and unit-norm, or all zeros where that map has no contrast at that scale.
    """
    from PIL import Image

    if side < 2:
        raise ConfigError(f"the signature side must be at least 2 pixels, not {side}")
    for scale in scales:
        if not 0.0 < float(scale) <= 1.0:
            raise ConfigError(f"a crop scale is a fraction in (0, 1], not {scale!r}")
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise ConfigError(f"unknown signature channel {unknown[0]!r}; valid choices: {', '.join(CHANNELS)}")
    rgb = crop_to_foreground(img.convert("RGB"))
    maps = {"grey": rgb.convert("L")}
    if "chroma" in channels:
        px = np.asarray(rgb, dtype=np.uint8)
        maps["chroma"] = Image.fromarray(px.max(axis=2) - px.min(axis=2))
    rows = np.zeros((len(channels), len(scales), side * side), dtype=np.float32)
    w, h = rgb.size
    for i, scale in enumerate(scales):
        cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
        box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
        for c, name in enumerate(channels):
            small = maps[name].crop(box).resize((side, side), Image.Resampling.BOX)
            row = np.asarray(small, dtype=np.float32).ravel()
            row -= row.mean()
            norm = float(np.linalg.norm(row))
            if norm > FLAT * side:  # the standard deviation, times sqrt(side * side)
                rows[c, i] = row / norm
    return rows


def crop_to_foreground(rgb: Image.Image, tolerance: int = FOREGROUND_TOLERANCE, pad: float = 0.04) -> Image.Image:
    """An RGB picture cropped to the pixels more than `tolerance` from its border's median colour, square-padded in it.

    Unlike the encoders' white-based content crop, a darkened or tinted background stays background.
    """
    from PIL import Image

    px = np.asarray(rgb, dtype=np.int16)
    border = np.concatenate([px[0], px[-1], px[:, 0], px[:, -1]])
    background = np.median(border, axis=0).astype(np.int16)
    mask = (np.abs(px - background) > tolerance).any(axis=2)
    if not mask.any():
        return rgb
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    width, height = right - left, bottom - top
    side = max(1, round(max(width, height) * (1 + 2 * pad)))
    out = Image.new("RGB", (side, side), tuple(int(v) for v in background))
    out.paste(rgb.crop((left, top, right, bottom)), ((side - width) // 2, (side - height) // 2))
    return out


def structure_score(a: np.ndarray, b: np.ndarray, side: int = SIDE) -> float:
    """Two signatures' score: best over scales and mirroring of the mean of their maps' correlations.

    A map flat in both pictures (no chroma in either) is left out of the mean.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    mirrored = b.reshape(*b.shape[:2], side, side)[..., ::-1].reshape(b.shape)
    both = np.concatenate([b, mirrored], axis=1)  # (channels, 2 * scales, side * side)
    total = np.zeros((a.shape[1], both.shape[1]), dtype=np.float32)
    counted = 0
    for c in range(len(a)):
        if c > 0 and not a[c].any() and not b[c].any():
            continue
        total += a[c] @ both[c].T
        counted += 1
    return float(total.max() / counted)


def load_signature(
    uri: str | None, side: int = SIDE, scales: Sequence[float] = SCALES, channels: Sequence[str] = CHANNELS
) -> np.ndarray | None:
    """The signature of the picture at `uri`, or None when there is no file or it cannot be decoded."""
    from mmgen.data.images import load_image

    if not uri:
        return None
    try:
        return signature(load_image(uri, max_side=DECODE_SIDE), side, scales, channels)
    except (ImageLoadError, OSError):
        return None


class PictureCheck:
    """Confirms near pairs by their pictures; called once per chunk of pairs, it decodes each picture once.

    `uris[row]` is the file of vector row `row`. Only signatures are kept, `2 * len(scales) * side**2`
    float16 values (2 KB at the defaults) per picture met in a pair; pictures are decoded in
    `workers` threads (SVGs render in a subprocess, so threads overlap them).
    """

    def __init__(
        self, uris: Sequence[str | None], min_structure: float = DEFAULT_MIN_STRUCTURE, side: int = SIDE,
        scales: Sequence[float] = SCALES, channels: Sequence[str] = CHANNELS, workers: int | None = None,
    ) -> None:  # fmt: skip
        self.uris = uris
        self.min_structure = check_min_structure(min_structure)
        self.side, self.scales, self.channels = side, tuple(scales), tuple(channels)
        self.workers = workers or min(8, (os.cpu_count() or 1) * 2)
        self.signatures: dict[int, np.ndarray | None] = {}
        self.pairs = self.dropped = self.unchecked = 0

    def __call__(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """A bool per pair (`left[i]`, `right[i]`): True when confirmed, or when a picture cannot be read."""
        return self.scores(left, right, record=True)[1]

    def scores(self, left: np.ndarray, right: np.ndarray, record: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(structure score per pair, NaN where unchecked; keep mask); `record` counts them in the totals."""
        from concurrent.futures import ThreadPoolExecutor

        left = np.asarray(left, dtype=np.int64)
        right = np.asarray(right, dtype=np.int64)
        if left.shape != right.shape or left.ndim != 1:
            raise ConfigError(f"pairs need two 1-d row arrays of one length, not {left.shape} and {right.shape}")
        todo = [r for r in np.unique(np.concatenate([left, right])).tolist() if r not in self.signatures]
        if todo:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(todo))) as pool:
                loaded = pool.map(lambda r: load_signature(self.uris[r], self.side, self.scales, self.channels), todo)
                for row, sig in zip(todo, loaded):
                    self.signatures[row] = None if sig is None else sig.astype(np.float16)
        scores = np.full(len(left), np.nan, dtype=np.float32)
        for i, (a, b) in enumerate(zip(left.tolist(), right.tolist())):
            sa, sb = self.signatures[a], self.signatures[b]
            if sa is not None and sb is not None and (sa.any() or sb.any()):  # two blank pictures: cosine alone
                scores[i] = structure_score(sa, sb, self.side)
        unchecked = np.isnan(scores)
        keep = unchecked | (scores >= self.min_structure)
        if record:
            self.pairs += len(keep)
            self.dropped += int((~keep).sum())
            self.unchecked += int(unchecked.sum())
        return scores, keep

    def unreadable(self) -> list[str]:
        """The files of pictures met in a pair that could not be read, each once."""
        return sorted({str(self.uris[r]) for r, sig in self.signatures.items() if sig is None and self.uris[r]})

    def summary(self) -> dict[str, Any]:
        """What was checked: the bound, pairs seen, dropped and kept unchecked, unreadable files."""
        return {"min_structure": self.min_structure, "pairs": self.pairs, "dropped": self.dropped,
                "unchecked": self.unchecked, "unreadable": self.unreadable()}  # fmt: skip
