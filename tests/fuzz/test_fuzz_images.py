"""Fuzz the image decoders (`load_image`, what the indexer decodes with, and `image_size`).

Every file either decodes to an RGB image no bigger than `max_side` or raises ImageLoadError
with a reason; nothing hangs (each case runs under a timeout) and nothing raises another type.
Fixed hand-made cases (truncated, mislabelled, CMYK, 16-bit, palette, animated, EXIF-rotated,
decompression bombs, hostile SVG) run as plain tests; hypothesis mutates small valid files.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image

from mmgen.data.images import image_size, load_image
from mmgen.errors import ImageLoadError

MAX_SIDE = 64
CASE_TIMEOUT_S = 30.0  # rsvg-convert has its own 60 s limit; a good case takes milliseconds
SECRET = (1, 2, 3)  # the colour of the picture a hostile SVG tries to pull in
needs_rsvg = pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="rsvg-convert not installed")
# Pillow warns about the corrupt EXIF and TIFF tags the mutations make; decoding goes on regardless.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """fn() in a daemon thread; fails the test if it runs longer (the thread is left behind)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except Exception as e:  # noqa: BLE001 - handed back to the caller, in its own thread
            box["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"still running after {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _decode(path: Path) -> Image.Image | ImageLoadError:
    """load_image under the timeout: the RGB image, or the ImageLoadError (any other error propagates)."""
    try:
        out = _within(CASE_TIMEOUT_S, lambda: load_image(path, max_side=MAX_SIDE))
    except ImageLoadError as e:
        assert str(e).startswith(str(path)) and len(str(e)) > len(str(path)) + 2, str(e)
        return e
    assert out.mode == "RGB", out.mode
    assert 1 <= min(out.size) and max(out.size) <= MAX_SIDE, out.size
    return out


def _size(path: Path) -> tuple[int, int] | ImageLoadError:
    try:
        width, height = _within(CASE_TIMEOUT_S, lambda: image_size(path))
    except ImageLoadError as e:
        return e
    assert isinstance(width, int) and isinstance(height, int) and width >= 1 and height >= 1, (width, height)
    return width, height


def _encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (12, 9), **params: Any) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, fmt, **params)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, idat: bytes, colour_type: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _full_bomb(side: int) -> bytes:
    """A real side x side greyscale PNG of zeros (side**2 bytes raw, a few MB compressed), built fast.

    After a full flush, deflate output for the same input is the same, so one block is compressed
    once and repeated; an empty final block and the Adler-32 of the whole close the stream.
    """
    rows = 100
    block = b"\x00" * ((side + 1) * rows)  # each row: filter byte 0, then `side` zero pixels
    deflate = zlib.compressobj(9)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(side // rows):
        adler = zlib.adler32(block, adler)
    last = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    stream = first + again * (side // rows - 1) + last + struct.pack(">I", adler)
    return _png(side, side, stream, colour_type=0)


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], loop=0, duration=50)
    return buf.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 0, 0)).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def _palette_transparent() -> bytes:
    im = Image.new("P", (10, 10), 0)
    im.putpalette([0, 0, 0, 255, 0, 0])
    im.paste(1, (5, 0, 10, 10))
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=0)
    return buf.getvalue()


def _sixteen_bit() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 40_000, dtype=np.uint16)).save(buf, "PNG")
    return buf.getvalue()


PNG = _encoded("PNG")
JPEG = _encoded("JPEG", size=(64, 48))
SVG_HEAD = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="16" height="16">'
LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {b} "{("&" + a + ";") * 10}">' for a, b in zip("abcdefgh", "bcdefghi"))
    + "]>"
)

# name -> (bytes, what must come of it: "decodes", "refused" or "either")
RASTER_CASES: dict[str, tuple[bytes, str]] = {
    "truncated.png": (PNG[: len(PNG) // 2], "refused"),
    "truncated-header.png": (PNG[:20], "refused"),
    "truncated.jpg": (JPEG[: len(JPEG) // 2], "refused"),
    "zero-bytes.png": (b"", "refused"),
    "png-bytes.jpg": (PNG, "decodes"),
    "jpeg-bytes.png": (JPEG, "decodes"),
    "text.png": (b"hello, I am not a picture\n", "refused"),
    "html.jpg": (b"<html><body>404 Not Found</body></html>", "refused"),
    "cmyk.jpg": (_encoded("JPEG", "CMYK"), "decodes"),
    "sixteen-bit.png": (_sixteen_bit(), "decodes"),
    "palette-transparent.png": (_palette_transparent(), "decodes"),
    "animated.gif": (_animated("GIF"), "decodes"),
    "animated.webp": (_animated("WEBP"), "decodes"),
    "exif-rotated.jpg": (_exif_rotated(), "decodes"),
    "one-pixel.png": (_encoded("PNG", size=(1, 1)), "decodes"),
    "one-pixel.jpg": (_encoded("JPEG", size=(1, 1)), "decodes"),
    "la.png": (_encoded("PNG", "LA"), "decodes"),
    "bmp.bmp": (_encoded("BMP"), "decodes"),
    "tiff.tif": (_encoded("TIFF"), "decodes"),
    # decompression bombs: headers claiming 30000x30000 (or 2**31-1 wide) over next to no data
    "bomb-header.png": (_png(30_000, 30_000, zlib.compress(b"\x00" * 1_000)), "refused"),
    "bomb-header-rows.png": (_png(30_000, 30_000, zlib.compress(b"\x00" * 90_001 * 50)), "refused"),
    "bomb-wide.png": (_png(2**31 - 1, 1, zlib.compress(b"\x00" * 1_000)), "refused"),
    "bomb-no-idat.png": (_png(30_000, 30_000, b""), "refused"),
    "zero-width.png": (_png(0, 10, zlib.compress(b"\x00" * 100)), "refused"),
}

SVG_CASES: dict[str, tuple[str, str]] = {
    "billion-laughs.svg": (LAUGHS + SVG_HEAD + "<text>&i;</text></svg>", "refused"),
    "laughs-in-size.svg": (LAUGHS + '<svg xmlns="http://www.w3.org/2000/svg" width="&i;" height="4"/>', "refused"),
    "entity-loop.svg": (
        '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "&b;"><!ENTITY b "&a;">]>'
        + SVG_HEAD
        + "<text>&a;</text></svg>",
        "refused",
    ),
    "external-entity.svg": (
        '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        + SVG_HEAD
        + "<text>&x;</text></svg>",
        "refused",
    ),
    "href-etc-passwd.svg": (SVG_HEAD + '<image href="file:///etc/passwd" width="16" height="16"/></svg>', "either"),
    "xinclude.svg": (
        SVG_HEAD.replace("<svg ", '<svg xmlns:xi="http://www.w3.org/2001/XInclude" ')
        + '<xi:include href="/etc/passwd" parse="text"/></svg>',
        "either",
    ),
    "not-xml.svg": ("plain text, no markup", "refused"),
    "unclosed.svg": (SVG_HEAD + "<rect", "refused"),
    "no-size.svg": ('<svg xmlns="http://www.w3.org/2000/svg"><rect width="10" height="10"/></svg>', "either"),
    "zero-size.svg": ('<svg xmlns="http://www.w3.org/2000/svg" width="0" height="0"/>', "refused"),
    "infinite-size.svg": ('<svg xmlns="http://www.w3.org/2000/svg" width="1e999" height="5"/>', "refused"),
    "huge-size.svg": ('<svg xmlns="http://www.w3.org/2000/svg" width="100000000" height="100000000"/>', "decodes"),
    "empty.svg": ("", "refused"),
}


def _check(path: Path, expect: str) -> None:
    start = time.monotonic()
    out = _decode(path)
    if expect == "decodes":
        assert isinstance(out, Image.Image), out
    elif expect == "refused":
        assert isinstance(out, ImageLoadError), f"decoded to {out}"
    _size(path)
    assert time.monotonic() - start < CASE_TIMEOUT_S


@pytest.mark.parametrize("name", sorted(RASTER_CASES))
def test_hand_made_raster_cases(tmp_path: Path, name: str) -> None:
    data, expect = RASTER_CASES[name]
    path = tmp_path / name
    path.write_bytes(data)
    _check(path, expect)


def test_rotation_and_colours_survive(tmp_path: Path) -> None:
    for name in ("exif-rotated.jpg", "cmyk.jpg", "palette-transparent.png", "sixteen-bit.png"):
        (tmp_path / name).write_bytes(RASTER_CASES[name][0])
    rotated = load_image(tmp_path / "exif-rotated.jpg", max_side=MAX_SIDE)
    assert rotated.size == (20, 40)  # 40x20 stored, displayed upright
    assert load_image(tmp_path / "palette-transparent.png").getpixel((0, 0)) == (255, 255, 255)  # transparent: white
    assert load_image(tmp_path / "palette-transparent.png").getpixel((9, 0)) == (255, 0, 0)
    grey = load_image(tmp_path / "sixteen-bit.png").getpixel((0, 0))
    assert grey[0] == grey[1] == grey[2] and 150 <= grey[0] <= 160  # 40000/65535 of white, not clipped


@pytest.mark.slow
def test_real_decompression_bomb_stays_small(tmp_path: Path) -> None:
    """30000x30000 pixels of real data (900 MB raw): refused or streamed down, never held in memory.

    Marked slow: alone it peaks at ~110 MB, but inside the full default run one run peaked at 1.4 GB
    (not yet explained), so it is run on purpose (`pytest -m slow`) until that is understood."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_full_bomb(30_000))
    # In a child process, so that its peak memory is its own.
    code = (
        "import json, resource, sys\n"
        "from mmgen.data.images import load_image\n"
        "from mmgen.errors import ImageLoadError\n"
        "try:\n"
        f"    out = list(load_image(sys.argv[1], max_side={MAX_SIDE}).size)\n"
        "except ImageLoadError as e:\n"
        "    out = str(e)\n"
        "print(json.dumps([out, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))\n"
    )
    start = time.monotonic()
    command = [sys.executable, "-c", code, str(path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    out, peak_kib = json.loads(run.stdout.strip().splitlines()[-1])
    assert out == [MAX_SIDE, MAX_SIDE] or "image" in out
    assert peak_kib < 1024 * 1024, f"peak memory {peak_kib / 1024:.0f} MiB"
    assert time.monotonic() - start < 60


@needs_rsvg
@pytest.mark.parametrize("name", sorted(SVG_CASES))
def test_hand_made_svg_cases(tmp_path: Path, name: str) -> None:
    text, expect = SVG_CASES[name]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    _check(path, expect)


@needs_rsvg
def test_svg_never_reads_pictures_outside_its_folder(tmp_path: Path) -> None:
    inside, outside = tmp_path / "svg", tmp_path / "elsewhere"
    (inside / "sub").mkdir(parents=True)
    outside.mkdir()
    for target in (inside / "own.png", inside / "sub" / "own.png", outside / "secret.png", tmp_path / "secret.png"):
        Image.new("RGB", (8, 8), SECRET).save(target)

    def centre(href: str) -> tuple[int, ...]:
        path = inside / "pic.svg"
        path.write_text(SVG_HEAD + f'<image xlink:href="{href}" width="16" height="16"/></svg>', encoding="utf-8")
        out = _decode(path)
        assert isinstance(out, Image.Image), out
        return tuple(out.getpixel((out.width // 2, out.height // 2)))

    assert centre("own.png") == SECRET and centre("sub/own.png") == SECRET  # its own folder: drawn
    for href in ("../secret.png", "../elsewhere/secret.png", str(outside / "secret.png"),
                 (outside / "secret.png").as_uri(), "file:///etc/passwd", "sub/../../secret.png"):  # fmt: skip
        assert centre(href) == (255, 255, 255), href  # outside it: left blank


# ---- mutations of small valid files ----------------------------------------------------------
SEEDS = {
    "png": PNG,
    "jpg": _encoded("JPEG"),
    "gif": _animated("GIF"),
    "webp": _encoded("WEBP"),
    "palette.png": _palette_transparent(),
    "16.png": _sixteen_bit(),
    "exif.jpg": _exif_rotated(),
}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A seed file with a few random edits: bit flips, overwrites, cuts, insertions, deletions."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "header"]))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "header" and len(data) > 24:  # PNG width/height, JPEG/GIF header bytes: huge sizes
            data[16:24] = draw(st.binary(min_size=8, max_size=8))
    return name, bytes(data)


@pytest.fixture(scope="module")
def mutation_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutations")


@given(mutated(), st.sampled_from(["", ".png", ".jpg", ".gif", ".webp", ".bin"]))
def test_mutated_files_decode_or_fail_with_image_load_error(
    mutation_dir: Path, case: tuple[str, bytes], suffix: str
) -> None:
    name, data = case
    path = mutation_dir / ("m" + (suffix or "." + name.rsplit(".", 1)[-1]))
    path.write_bytes(data)
    out = _decode(path)
    event("decoded" if isinstance(out, Image.Image) else "ImageLoadError")
    _size(path)


SVG_SEED = (
    SVG_HEAD + '<rect x="2" y="2" width="12" height="12" fill="#f00" stroke="#000"/>'
    '<circle cx="8" cy="8" r="3" fill="#0f0"/><text x="1" y="15">hi</text></svg>'
)


@needs_rsvg
@given(st.lists(st.tuples(st.integers(0, len(SVG_SEED)), st.integers(0, 8), st.text(max_size=8)), min_size=1,
                max_size=4))  # fmt: skip
def test_mutated_svg_renders_or_fails_with_image_load_error(
    mutation_dir: Path, edits: list[tuple[int, int, str]]
) -> None:
    text = SVG_SEED
    for at, cut, insert in edits:
        text = text[:at] + insert + text[at + cut :]
    path = mutation_dir / "m.svg"
    path.write_text(text, encoding="utf-8")
    out = _decode(path)
    event("rendered" if isinstance(out, Image.Image) else "ImageLoadError")
    _size(path)


# ---- regressions -------------------------------------------------------------------------------
BAD_SVG_SIZES = ['width="1e999" height="5"', 'viewBox="0 0 inf 10"', 'width="1e308in" height="1"',
                 'width="-5" height="-5"', 'viewBox="0 0 -3 0"']  # fmt: skip


@pytest.mark.parametrize("size", BAD_SVG_SIZES)
def test_svg_size_must_be_positive_and_finite(tmp_path: Path, size: str) -> None:
    # Before: OverflowError from round(inf), or a negative size passed on.
    path = tmp_path / "s.svg"
    path.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" {size}/>', encoding="utf-8")
    with pytest.raises(ImageLoadError, match="not a positive finite size"):
        image_size(path)
