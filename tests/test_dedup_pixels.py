"""mmgen.dedup_pixels: structure signatures of real pictures (copies score high, a drawing filled in
or another shape scores low), and PictureCheck on files (each decoded once, unreadable ones kept unchecked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmgen.dedup_pixels import (
    DEFAULT_MIN_STRUCTURE,
    SIDE,
    PictureCheck,
    check_min_structure,
    load_signature,
    signature,
    structure_score,
)
from mmgen.errors import ConfigError


def _face(filled: bool = True, size: int = 120) -> Any:
    """A lopsided drawing (so its mirror differs): a ring, two eyes, a mouth off to one side."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    s = size / 120
    d.ellipse([10 * s, 10 * s, 110 * s, 110 * s], fill=(250, 200, 40) if filled else None, outline=(20, 20, 20),
              width=round(4 * s))  # fmt: skip
    d.ellipse([35 * s, 35 * s, 48 * s, 55 * s], fill=(20, 20, 20))
    d.ellipse([70 * s, 35 * s, 83 * s, 55 * s], fill=(20, 20, 20))
    d.rectangle([60 * s, 78 * s, 95 * s, 86 * s], fill=(200, 30, 30))
    return im


def _score(a: Any, b: Any) -> float:
    return structure_score(signature(a), signature(b))


def test_copies_score_high_and_other_drawings_low() -> None:
    from PIL import Image, ImageEnhance, ImageOps

    face = _face()
    copies = {
        "resized": face.resize((60, 60), Image.Resampling.LANCZOS),
        "mirrored": ImageOps.mirror(face),
        "darker": ImageEnhance.Brightness(face).enhance(0.9),
        "cropped": face.crop((6, 6, 114, 114)),
    }
    for name, copy in copies.items():
        assert _score(face, copy) >= 0.95, name
    assert _score(face, face) == pytest.approx(1.0, abs=1e-5)
    outline = _face(filled=False)  # the same drawing, not filled: another style of the concept
    assert _score(face, outline) < DEFAULT_MIN_STRUCTURE
    from PIL import ImageDraw

    square = Image.new("RGB", (120, 120), (255, 255, 255))
    ImageDraw.Draw(square).rectangle([20, 40, 100, 80], fill=(250, 200, 40))
    assert _score(face, square) < 0.5


def test_signature_rows_are_standardised_and_a_blank_picture_matches_nothing() -> None:
    from PIL import Image

    rows = signature(_face(), side=16, scales=(1.0, 0.8))
    assert rows.shape == (2, 2, 256) and rows.dtype == np.float32  # (grey, chroma) x scales x pixels
    assert np.allclose(rows.mean(axis=2), 0, atol=1e-5) and np.allclose(np.linalg.norm(rows, axis=2), 1, atol=1e-4)
    blank = signature(Image.new("RGB", (50, 50), (255, 255, 255)))
    assert not blank.any()
    assert structure_score(blank, blank) == 0.0 and structure_score(signature(_face()), blank) == 0.0
    with pytest.raises(ConfigError, match="crop scale"):
        signature(_face(), scales=(1.2,))
    with pytest.raises(ConfigError, match="at least 2"):
        signature(_face(), side=1)


@pytest.mark.parametrize("bad", [1.5, -2, float("nan"), "high"])
def test_a_bound_outside_minus1_1_is_refused(bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        check_min_structure(bad)
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        PictureCheck([], bad)


def test_picture_check_decodes_each_file_once_and_keeps_unreadable_pairs(tmp_path: Path) -> None:
    from PIL import Image

    face = _face()
    face.save(tmp_path / "face.png")
    face.resize((80, 80), Image.Resampling.LANCZOS).save(tmp_path / "small.jpg", quality=80)
    _face(filled=False).save(tmp_path / "outline.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    uris = [str(tmp_path / n) for n in ("face.png", "small.jpg", "outline.png", "broken.png")] + [
        str(tmp_path / "gone.png"), None,
    ]  # fmt: skip
    check = PictureCheck(uris)
    keep = check(np.array([0, 0, 1]), np.array([1, 2, 2]))
    assert keep.tolist() == [True, False, False]
    assert set(check.signatures) == {0, 1, 2}
    first = check.signatures[0]
    keep = check(np.array([0, 0, 3, 4]), np.array([3, 5, 4, 1]))  # nothing here can be checked
    assert keep.tolist() == [True, True, True, True]
    assert check.signatures[0] is first  # not decoded again
    summary = check.summary()
    assert summary == {"min_structure": DEFAULT_MIN_STRUCTURE, "pairs": 7, "dropped": 2, "unchecked": 4,
                       "unreadable": [uris[3], uris[4]]}  # fmt: skip
    scores, _ = check.scores(np.array([0]), np.array([1]))
    assert 0.95 <= scores[0] <= 1.0 and check.summary()["pairs"] == 7  # scores() alone counts nothing
    assert load_signature(None) is None and load_signature(uris[3]) is None
    Image.new("RGB", (40, 40), (255, 255, 255)).save(tmp_path / "blank.png")
    Image.new("RGB", (90, 90), (250, 250, 250)).save(tmp_path / "blank2.png")
    blanks = PictureCheck([str(tmp_path / "blank.png"), str(tmp_path / "blank2.png")])
    assert blanks(np.array([0]), np.array([1])).tolist() == [True]  # no structure to judge: the cosine decides
    assert blanks.summary()["unchecked"] == 1 and blanks.summary()["unreadable"] == []
    assert load_signature(uris[0]).shape == (2, 2, SIDE * SIDE)
    with pytest.raises(ConfigError, match="one length"):
        check(np.array([0, 1]), np.array([1]))
