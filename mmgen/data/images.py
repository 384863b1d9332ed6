"""Decode any supported image (raster or SVG) to a small RGB picture on white, with bounded memory."""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import struct
import subprocess
import warnings
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmgen.data.untrusted import DEFAULT_LIMITS, UntrustedLimits, run_with_deadline, safe_svg_markup
from mmgen.errors import ConfigError, ImageLoadError, MissingDependencyError

if TYPE_CHECKING:
    from PIL import Image

MAX_SIDE_DEFAULT = 256
# Above this many pixels Pillow never decodes the file: libvips streams it down to size instead.
PIXEL_BUDGET = 40_000_000
SVG_SUFFIXES = (".svg", ".svgz")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
IMAGE_SUFFIXES = RASTER_SUFFIXES + SVG_SUFFIXES
SVG_TIMEOUT_S = 60
# Formats decoded in-process; others Pillow may open (EPS, PDF...) shell out or are rarely images.
_PIL_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "TGA", "ICO"})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, zlib.error, struct.error)
_WHITE = (255, 255, 255)
_RSVG_HINT = "rsvg-convert is needed to render SVG; install it: apt-get install librsvg2-bin"


def image_size(path: str | Path) -> tuple[int, int]:
    """Return (width, height) from the file header only; SVGs report their declared size or viewBox."""
    p = _check_file(path)
    if p.suffix.lower() in SVG_SUFFIXES:
        return _svg_size(p)
    from PIL import Image, UnidentifiedImageError

    try:
        with _quiet_bombs(), Image.open(p) as im:
            return im.size
    except Image.DecompressionBombError:
        return _vips_size(p)
    except UnidentifiedImageError as e:
        raise ImageLoadError(f"{p}: not a recognised image (unknown format or corrupt header)") from e
    except _DECODE_ERRORS as e:
        raise ImageLoadError(f"{p}: unreadable image header ({e})") from e


def load_image(
    path: str | Path,
    max_side: int = MAX_SIDE_DEFAULT,
    *,
    untrusted: bool = False,
    limits: UntrustedLimits | None = None,
) -> Image.Image:
    """Decode an image to RGB composited on white, longest side at most max_side (never upscaled).

    `untrusted=True` is for files from elsewhere (uploads, folders from other people): byte, pixel
    and time limits (`limits`, default `UntrustedLimits()`) and SVGs rendered with no reference to
    anything outside them; see mmgen.data.untrusted. Raises ImageLoadError for a missing, empty,
    corrupt, truncated or unsupported file, and for each untrusted limit passed (naming it).
    """
    if max_side < 1:
        raise ConfigError(f"max_side must be a positive number of pixels, got {max_side}")
    if limits is not None and not untrusted:
        raise ConfigError("limits apply to untrusted images: pass untrusted=True with them")
    p = _check_file(path)
    guard = (limits or DEFAULT_LIMITS) if untrusted else None
    if guard is not None:
        guard.check_bytes(p, p.stat().st_size)
    if p.suffix.lower() in SVG_SUFFIXES:
        return _load_svg(p, max_side, guard)
    from PIL import Image, UnidentifiedImageError

    try:
        with _quiet_bombs():
            im = Image.open(p)
    except Image.DecompressionBombError as e:
        if guard is not None:
            raise guard.too_many_pixels(p) from e
        return _load_vips(p, max_side)
    except UnidentifiedImageError as e:
        raise ImageLoadError(f"{p}: not a recognised image (unknown format or corrupt header)") from e
    except _DECODE_ERRORS as e:
        raise ImageLoadError(f"{p}: unreadable image header ({e})") from e
    with im:
        if im.format not in _PIL_FORMATS:
            raise ImageLoadError(f"{p}: unsupported image format {im.format}")
        width, height = im.size
        if width < 1 or height < 1:
            raise ImageLoadError(f"{p}: image has no pixels ({width}x{height})")
        if guard is not None:
            guard.check_pixels(p, width, height)
            decode = partial(_decode, p, im, max_side)
            return run_with_deadline(decode, guard.decode_seconds, partial(guard.too_slow, p))
        if width * height > PIXEL_BUDGET:
            return _load_vips(p, max_side)
        return _decode(p, im, max_side)


def _decode(p: Path, im: Image.Image, max_side: int) -> Image.Image:
    """Decode an opened Pillow image (JPEGs at reduced size when possible) and finish it."""
    from PIL import ImageOps

    if im.format in ("JPEG", "MPO"):
        im.draft("RGB", (max_side, max_side))
    try:
        im.load()
        out = ImageOps.exif_transpose(im) if im.format in ("JPEG", "MPO", "TIFF", "WEBP") else im
        return _finish(out, max_side)
    except _DECODE_ERRORS as e:
        raise ImageLoadError(f"{p}: corrupt or truncated image ({e})") from e


def _check_file(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ImageLoadError(f"{p}: file not found")
    if not p.is_file():
        raise ImageLoadError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise ImageLoadError(f"{p}: empty file (0 bytes)")
    return p


@contextlib.contextmanager
def _quiet_bombs() -> Iterator[None]:
    """Silence Pillow's DecompressionBombWarning: big images are routed to libvips on purpose."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _finish(im: Image.Image, max_side: int) -> Image.Image:
    """Normalise mode, downscale to max_side, then flatten transparency onto white; returns a new image."""
    from PIL import Image

    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if max(im.size) > max_side and im.mode in ("RGB", "RGBA", "L", "LA") and "transparency" not in im.info:
        # Shrink in place first so that the mode conversion below copies a small image, not a big one.
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping everything above 255 to white.
        im = im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif im.mode == "F":
        im = im.point(lambda v: v * 255).convert("L")
    im = im.convert("RGBA" if has_alpha else "RGB")
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if has_alpha:
        background = Image.new("RGB", im.size, _WHITE)
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im


def _import_pyvips() -> Any:  # pyvips has no type stubs
    try:
        import pyvips
    except (ImportError, OSError) as e:
        raise MissingDependencyError(
            f"pyvips is needed to decode images over {PIXEL_BUDGET:,} pixels: pip install pyvips pyvips-binary ({e})"
        ) from e
    return pyvips


def _vips_size(p: Path) -> tuple[int, int]:
    pyvips = _import_pyvips()
    try:
        header = pyvips.Image.new_from_file(str(p), access="sequential")
    except pyvips.Error as e:
        raise ImageLoadError(f"{p}: unreadable image header ({_vips_reason(e)})") from e
    return header.width, header.height


def _load_vips(p: Path, max_side: int) -> Image.Image:
    """Shrink a huge image with libvips, which streams the decode instead of holding every pixel."""
    from PIL import Image

    pyvips = _import_pyvips()
    try:
        img = pyvips.Image.thumbnail(str(p), max_side, height=max_side, size="down", fail_on="error")
        if img.interpretation != "srgb" or img.format != "uchar":
            img = img.colourspace("srgb")
        if img.hasalpha():
            img = img.flatten(background=[255] * (img.bands - 1))
        if img.format != "uchar":
            img = img.cast("uchar")
        if img.bands == 1:
            img = img.bandjoin([img, img])
        elif img.bands > 3:
            img = img.extract_band(0, n=3)
        data = img.write_to_memory()
    except pyvips.Error as e:
        raise ImageLoadError(f"{p}: corrupt or truncated image ({_vips_reason(e)})") from e
    return Image.frombytes("RGB", (img.width, img.height), data)


def _vips_reason(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return "; ".join(lines[:2]) or type(e).__name__


def _rsvg() -> str:
    exe = shutil.which("rsvg-convert")
    if exe is None:
        raise MissingDependencyError(_RSVG_HINT)
    return exe


def render_svg_png(path: str | Path, side: int) -> bytes:
    """Render an SVG with rsvg-convert to PNG bytes fitting a side x side box (aspect kept)."""
    p = Path(path)
    return _rsvg_png(p, side, str(p), SVG_TIMEOUT_S)


def _rsvg_png(
    source: Path | bytes, side: int, where: str, timeout: float, too_slow: Callable[[], ImageLoadError] | None = None
) -> bytes:
    """rsvg-convert on a file, or on markup fed to its stdin (which gives it no base folder to resolve against)."""
    markup = source if isinstance(source, bytes) else None
    cmd = [_rsvg(), "--width", str(side), "--height", str(side), "--keep-aspect-ratio"]
    try:
        done = subprocess.run(
            cmd if markup is not None else [*cmd, str(source)],
            input=markup,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:  # run() has killed the renderer by now
        if too_slow is not None:
            raise too_slow() from e
        raise ImageLoadError(f"{where}: SVG rendering took longer than {timeout:g} s") from e
    if done.returncode != 0 or not done.stdout:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ImageLoadError(f"{where}: cannot render SVG ({reason[0] if reason else 'no output'})")
    return done.stdout


def render_svg_buffer(svg: bytes, side: int | None = None) -> bytes:
    """Render SVG markup to PNG bytes in process (libvips' librsvg), fitting side x side when given.

    The markup comes from a buffer, so it has no base folder: references to other files resolve to nothing.
    """
    pyvips = _import_pyvips()
    try:
        image = pyvips.Image.svgload_buffer(svg, unlimited=False)
        if side is not None and max(image.width, image.height) != side:
            scale = side / max(image.width, image.height, 1)
            image = pyvips.Image.svgload_buffer(svg, scale=scale, unlimited=False)
        return bytes(image.write_to_buffer(".png"))
    except pyvips.Error as e:
        reason = str(e).strip().splitlines()
        raise ImageLoadError(reason[0] if reason else "libvips could not render the SVG") from e


def _load_svg(p: Path, max_side: int, guard: UntrustedLimits | None = None) -> Image.Image:
    """Render an SVG: from its file (trusted), or from sanitised markup on stdin within the untrusted limits."""
    from PIL import Image

    if guard is None:
        png = render_svg_png(p, max_side)
    else:
        markup = safe_svg_markup(p, guard)
        png = _rsvg_png(markup, max_side, str(p), guard.decode_seconds, partial(guard.too_slow, p))
    try:
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            return _finish(im, max_side)
    except _DECODE_ERRORS as e:
        raise ImageLoadError(f"{p}: SVG renderer returned an unreadable PNG ({e})") from e


_UNITS_PX = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}


def _svg_length(value: str | None) -> float | None:
    if not value:
        return None
    v = value.strip()
    unit = v.lstrip("0123456789.+-eE")
    number = v[: len(v) - len(unit)]
    scale = _UNITS_PX.get(unit.strip().lower())
    try:
        return float(number) * scale if scale is not None and number else None
    except ValueError:
        return None


def _svg_size(p: Path) -> tuple[int, int]:
    try:
        for _event, el in ET.iterparse(p, events=("start",)):
            width, height = _svg_length(el.get("width")), _svg_length(el.get("height"))
            if width and height:
                return _svg_pixels(p, width, height)
            box = (el.get("viewBox") or "").replace(",", " ").split()
            if len(box) == 4:
                return _svg_pixels(p, float(box[2]), float(box[3]))
            break
    except (ET.ParseError, ValueError) as e:
        raise ImageLoadError(f"{p}: unreadable SVG ({e})") from e
    raise ImageLoadError(f"{p}: SVG declares neither width/height nor viewBox")


def _svg_pixels(p: Path, width: float, height: float) -> tuple[int, int]:
    # `1e999`, `inf`, `nan` and negative sizes parse as floats; round() would raise or pass them on.
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise ImageLoadError(f"{p}: SVG size {width:g}x{height:g} is not a positive finite size")
    return max(1, round(width)), max(1, round(height))
