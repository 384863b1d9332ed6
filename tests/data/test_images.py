"""load_image on real files: transparency, every failure mode, huge images, SVG."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmgen.data import images
from mmgen.data.images import image_size, load_image
from mmgen.errors import ImageLoadError, MissingDependencyError

needs_rsvg = pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="rsvg-convert not installed")


def test_rgba_is_composited_on_white(write_png: Callable[..., Path]) -> None:
    path = write_png("a.png", (4, 4), "RGBA", (0, 0, 0, 0))
    im = Image.open(path)
    im.putpixel((1, 1), (255, 0, 0, 255))
    im.putpixel((2, 2), (0, 0, 255, 128))
    im.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (4, 4)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (255, 0, 0)
    r, g, b = out.getpixel((2, 2))  # half-transparent blue over white
    assert b == 255 and 120 <= r <= 135 and r == g


def test_la_and_palette_transparency(tmp_path: Path, write_png: Callable[..., Path]) -> None:
    la = load_image(write_png("la.png", (3, 3), "LA", (0, 0)))
    assert la.getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (3, 3), 1)
    pal.putpalette([0, 255, 0, 0, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "p.png", transparency=1)
    out = load_image(tmp_path / "p.png")
    assert out.getpixel((0, 0)) == (0, 255, 0) and out.getpixel((2, 2)) == (255, 255, 255)


def test_downscale_keeps_aspect_and_never_upscales(write_png: Callable[..., Path]) -> None:
    assert load_image(write_png("wide.png", (400, 100)), max_side=64).size == (64, 16)
    assert load_image(write_png("small.png", (10, 20)), max_side=64).size == (10, 20)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(tmp_path / "g16.png")
    r, g, b = load_image(tmp_path / "g16.png").getpixel((0, 0))
    assert r == g == b and 120 <= r <= 135


def test_jpeg_uses_draft_and_keeps_colour(tmp_path: Path) -> None:
    Image.new("RGB", (2000, 1000), (10, 200, 30)).save(tmp_path / "a.jpg", quality=95)
    out = load_image(tmp_path / "a.jpg", max_side=100)
    assert out.size == (100, 50)
    assert all(abs(a - b) < 8 for a, b in zip(out.getpixel((50, 25)), (10, 200, 30), strict=True))


def _reason(path: Path) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    return str(info.value)


def test_each_failure_has_its_own_reason(tmp_path: Path, write_png: Callable[..., Path]) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, I am not a picture\n", encoding="utf-8")
    (tmp_path / "garbage.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    noise = np.random.default_rng(1).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (4, 4)).save(tmp_path / "x.eps")
    reasons = {
        "missing": _reason(tmp_path / "missing.png"),
        "empty": _reason(tmp_path / "empty.png"),
        "text": _reason(tmp_path / "text.png"),
        "garbage": _reason(tmp_path / "garbage.jpg"),
        "truncated": _reason(tmp_path / "cut.png"),
        "eps": _reason(tmp_path / "x.eps"),
        "folder": _reason(tmp_path),
    }
    assert reasons["missing"].endswith("missing.png: file not found")
    assert reasons["empty"].endswith("empty file (0 bytes)")
    assert "not a recognised image" in reasons["text"]
    assert "not a recognised image" in reasons["garbage"]
    assert "corrupt or truncated image" in reasons["truncated"]
    assert "unsupported image format EPS" in reasons["eps"]
    assert reasons["folder"].endswith("not a regular file")
    assert all("\n" not in r for r in reasons.values())


@pytest.fixture(scope="module")
def big_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 9000x9000 (81 Mpx) PNG, top half white, bottom half black: a few hundred KB on disk."""
    path = tmp_path_factory.mktemp("big") / "big.png"
    big = Image.new("L", (9000, 9000), 0)
    big.paste(255, (0, 0, 9000, 4500))
    big.save(path, compress_level=1)
    return path


# 1 Mpx: Pillow raises DecompressionBombError on open; 50 Mpx: it only warns (the warning must not leak).
@pytest.mark.parametrize("pillow_limit", [1_000_000, 50_000_000])
def test_pixel_budget_routes_to_streaming_decoder(
    big_png: Path, pillow_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    assert images.PIXEL_BUDGET < 81_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = load_image(big_png, max_side=90)
        assert image_size(big_png) == (9000, 9000)
    assert out.mode == "RGB" and out.size == (90, 90)
    assert out.getpixel((45, 10)) == (255, 255, 255) and out.getpixel((45, 80)) == (0, 0, 0)


def test_streaming_decoder_flattens_alpha_and_rejects_truncation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "PIXEL_BUDGET", 100)
    Image.new("RGBA", (40, 20), (0, 0, 255, 0)).save(tmp_path / "clear.png")
    out = load_image(tmp_path / "clear.png", max_side=10)
    assert out.size == (10, 5) and out.getpixel((5, 2)) == (255, 255, 255)
    noise = np.random.default_rng(2).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "n.png")
    data = (tmp_path / "n.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated image" in _reason(tmp_path / "cut.png")


@needs_rsvg
def test_svg_is_rendered_to_fit(tmp_path: Path) -> None:
    (tmp_path / "a.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" viewBox="0 0 200 100">'
        '<rect x="0" y="0" width="100" height="100" fill="#ff0000"/></svg>',
        encoding="utf-8",
    )
    out = load_image(tmp_path / "a.svg", max_side=64)
    assert out.size == (64, 32)
    assert out.getpixel((10, 16)) == (255, 0, 0) and out.getpixel((54, 16)) == (255, 255, 255)
    assert image_size(tmp_path / "a.svg") == (200, 100)
    (tmp_path / "bad.svg").write_text("<svg><unclosed></svg>", encoding="utf-8")
    assert "cannot render SVG" in _reason(tmp_path / "bad.svg")


def test_missing_rsvg_convert_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(MissingDependencyError, match="apt-get install librsvg2-bin"):
        load_image(tmp_path / "a.svg")
