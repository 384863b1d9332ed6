"""load_image(..., untrusted=True) on real files: no reference leaves an SVG, and every limit refuses with its name."""

from __future__ import annotations

import gzip
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmgen.data.images import load_image
from mmgen.data.untrusted import DEFAULT_LIMITS, UntrustedLimits, run_with_deadline, safe_svg_markup
from mmgen.errors import ConfigError, ImageLoadError

needs_rsvg = pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="rsvg-convert not installed")

SVG_OPEN = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="40" height="40">'
RED = (255, 0, 0)


def _write_svg(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(SVG_OPEN + body + "</svg>", encoding="utf-8")
    return path


def _refusal(path: Path, **kw: object) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(path, untrusted=True, **kw)  # type: ignore[arg-type]
    return str(info.value)


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height; its pixel data is never reached."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@needs_rsvg
def test_a_file_beside_the_svg_is_rendered_only_when_trusted(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), RED).save(tmp_path / "secret.png")
    for name, attr in (("plain.svg", "href"), ("xlink.svg", "xlink:href")):
        svg = _write_svg(tmp_path, name, f'<image {attr}="secret.png" x="0" y="0" width="40" height="40"/>')
        assert load_image(svg).getpixel((20, 20)) == RED  # librsvg's policy: files beside the SVG are read
        assert load_image(svg, untrusted=True).getpixel((20, 20)) == (255, 255, 255)
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (8, 8), RED).save(tmp_path / "sub" / "below.png")
    svg = _write_svg(tmp_path, "below.svg", '<image href="sub/below.png" width="40" height="40"/>')
    assert load_image(svg).getpixel((20, 20)) == RED
    assert load_image(svg, untrusted=True).getpixel((20, 20)) == (255, 255, 255)


@needs_rsvg
def test_ordinary_png_and_svg_decode_the_same_in_both_modes(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "n.png")
    Image.fromarray(noise).save(tmp_path / "n.jpg", quality=90)
    for name in ("n.png", "n.jpg"):
        trusted, untrusted = load_image(tmp_path / name, 32), load_image(tmp_path / name, 32, untrusted=True)
        assert np.array_equal(np.asarray(trusted), np.asarray(untrusted))
    # Same-document references (#id: <use>, gradients) are kept; text keeps its tails.
    svg = _write_svg(tmp_path, "a.svg", (
        '<defs><linearGradient id="g"><stop offset="0" stop-color="#0a0"/><stop offset="1" stop-color="#00f"/>'
        '</linearGradient><rect id="r" width="20" height="20" fill="url(#g)"/></defs>'
        '<use href="#r"/><use xlink:href="#r" x="20" y="20"/><circle cx="30" cy="10" r="8" fill="#c00"/>'
        '<text x="2" y="36" font-size="8">a<tspan>b</tspan>c</text>'
    ))  # fmt: skip
    trusted = np.asarray(load_image(svg, 64), dtype=np.int16)
    untrusted = np.asarray(load_image(svg, 64, untrusted=True), dtype=np.int16)
    assert trusted.shape == untrusted.shape == (64, 64, 3)
    assert np.abs(trusted - untrusted).max() <= 2
    assert tuple(untrusted[16, 48]) == (204, 0, 0) and untrusted[40, 40].sum() < 500  # the circle, the second <use>
    gz = tmp_path / "a.svgz"
    gz.write_bytes(gzip.compress(svg.read_bytes()))
    assert np.abs(np.asarray(load_image(gz, 64, untrusted=True), dtype=np.int16) - untrusted).max() == 0


@pytest.mark.parametrize(
    "markup",
    [
        '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x "red">]><svg xmlns="http://www.w3.org/2000/svg"'
        ' width="4" height="4"><rect width="4" height="4" fill="&x;"/></svg>',
        '<!DOCTYPE svg [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;">]>'
        '<svg xmlns="http://www.w3.org/2000/svg"><text>&c;</text></svg>',
        '<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><svg xmlns="http://www.w3.org/2000/svg">'
        "<text>&xxe;</text></svg>",
        '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">'
        '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>',
    ],
    ids=["entity", "expansion", "external-entity", "external-dtd"],
)
def test_a_doctype_is_refused(tmp_path: Path, markup: str) -> None:
    (tmp_path / "e.svg").write_text(markup, encoding="utf-8")
    assert "DOCTYPE" in _refusal(tmp_path / "e.svg")
    # In UTF-16 too: the parser that checks decodes the bytes, a byte scan would miss it.
    (tmp_path / "e16.svg").write_bytes(markup.encode("utf-16"))
    assert "DOCTYPE" in _refusal(tmp_path / "e16.svg")


def test_every_outside_reference_is_stripped(tmp_path: Path) -> None:
    svg = _write_svg(tmp_path, "refs.svg", (
        '<image href="data:image/png;base64,iVBORw0KGgo=" width="4" height="4"/>'
        '<image href="http://example.com/x.png"/><use xlink:href="other.svg#shape"/><use href="#keep"/>'
        '<rect id="keep" fill="url(other.svg#grad)" style="filter:url(f.svg#f)" stroke="url(#local)"/>'
        '<style>@import url("evil.css");</style><style>rect { fill: url(#local) }</style>'
        '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd" parse="text"/>'
        '<?xml-stylesheet href="evil.css"?><!-- a comment -->'
    ))  # fmt: skip
    out = safe_svg_markup(svg, DEFAULT_LIMITS).decode("utf-8")
    for gone in ("data:", "example.com", "other.svg", "f.svg", "evil.css", "XInclude", "passwd", "comment"):
        assert gone not in out, gone
    for kept in ('href="#keep"', 'stroke="url(#local)"', "fill: url(#local)"):
        assert kept in out, kept


def test_the_byte_limit_refuses_before_decoding(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with open(big, "wb") as fh:  # sparse: 20 MB + 1 on disk costs nothing
        fh.truncate(DEFAULT_LIMITS.max_bytes + 1)
    reason = _refusal(big)
    assert "20,000,000 bytes" in reason and "max_bytes" in reason
    assert "not a recognised image" in str(pytest.raises(ImageLoadError, load_image, big).value)
    Image.new("RGB", (64, 64), RED).save(tmp_path / "ok.png")
    small = UntrustedLimits(max_bytes=100)
    assert "100 bytes" in _refusal(tmp_path / "ok.png", limits=small)
    svg = _write_svg(tmp_path, "long.svg", "<desc>" + "x" * 200 + "</desc>")
    assert "100 bytes" in _refusal(svg, limits=small)
    bomb = tmp_path / "bomb.svgz"  # 1 MB of markup in a few KB of gzip
    bomb.write_bytes(gzip.compress((SVG_OPEN + "<desc>" + " " * 1_000_000 + "</desc></svg>").encode()))
    assert "inflates to more than" in _refusal(bomb, limits=UntrustedLimits(max_bytes=50_000))


@pytest.mark.parametrize("side", [7000, 60_000])  # 49 Mpx: Pillow opens it; 3.6 Gpx: Pillow refuses to open it
def test_the_pixel_limit_refuses_a_huge_declared_size(tmp_path: Path, side: int) -> None:
    path = _png_declaring(tmp_path / "huge.png", side, side)
    reason = _refusal(path)
    assert "40,000,000 pixels" in reason and "max_pixels" in reason
    Image.new("RGB", (100, 100), RED).save(tmp_path / "ok.png")
    assert "9,999 pixels" in _refusal(tmp_path / "ok.png", limits=UntrustedLimits(max_pixels=9_999))


@needs_rsvg
def test_the_time_limit_refuses_a_slow_decode(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "n.png", compress_level=1)
    quick = UntrustedLimits(decode_seconds=1e-4)
    assert "decode_seconds" in _refusal(tmp_path / "n.png", limits=quick)
    svg = _write_svg(tmp_path, "a.svg", '<rect width="40" height="40"/>')
    assert "decode_seconds" in _refusal(svg, limits=quick)  # rsvg-convert is killed at the limit
    started = time.monotonic()
    with pytest.raises(ImageLoadError, match="took longer"):
        run_with_deadline(lambda: time.sleep(2), 0.05, lambda: ImageLoadError("took longer"))
    assert time.monotonic() - started < 1
    with pytest.raises(ZeroDivisionError):
        run_with_deadline(lambda: 1 / 0, 5, lambda: ImageLoadError("unused"))


def test_limits_are_checked_and_only_for_untrusted(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), RED).save(tmp_path / "ok.png")
    with pytest.raises(ConfigError, match="untrusted=True"):
        load_image(tmp_path / "ok.png", limits=UntrustedLimits())
    with pytest.raises(ConfigError, match="positive"):
        UntrustedLimits(decode_seconds=0)
    assert load_image(tmp_path / "ok.png", untrusted=True).getpixel((1, 1)) == RED
