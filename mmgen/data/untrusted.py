"""Limits and SVG sanitising for images from elsewhere (`load_image(..., untrusted=True)`).

Trusted decoding (the demo corpora, a user's own folders) streams huge rasters down with libvips
and lets librsvg follow references to files beside and below an SVG. A file from elsewhere (an
upload, a downloaded folder) gets none of that:

- bytes: a file over `max_bytes` is refused before anything decodes it (an SVGZ also when it
  inflates past `max_bytes`);
- pixels: a raster whose header declares more than `max_pixels` is refused, never streamed down;
- time: a decode is waited for at most `decode_seconds` (see `run_with_deadline` for what that
  bounds and what it does not); an SVG renders in an `rsvg-convert` process killed at that time;
- SVG references: the markup is parsed here with expat, refused if it has a DOCTYPE (the only
  place entities can be declared, so neither external entities nor expansion loops get through),
  stripped of every reference that leaves the document (`sanitize_svg`), and serialised anew; the
  renderer reads that from stdin, so it has no base folder to resolve a reference against even if
  one were left. The renderer never sees the original bytes, so no disagreement between two XML
  parsers (an encoding one of them reads differently) can smuggle anything past the check. It is
  rsvg-convert rather than libvips' in-process `svgload_buffer` (`render_svg_buffer`) because a
  process can be killed at the time limit and a crash in librsvg takes down only that process;
  the parse here is linear in the (byte-limited) markup.

Memory is bounded only through these: a raster holds at most `max_pixels` pixels (plus Pillow's
working copies), an SVG renders to at most max_side x max_side in its own process.
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from xml.parsers import expat

from mmgen.errors import ConfigError, ImageLoadError

T = TypeVar("T")

SVG_NS = "http://www.w3.org/2000/svg"
XINCLUDE_NS = "http://www.w3.org/2001/XInclude"
# Targets of CSS `url(...)`; only same-document fragments (`url(#gradient)`) are kept.
_CSS_URL = re.compile(r"url\(\s*['\"]?\s*([^'\")\s]*)", re.IGNORECASE)


@dataclass(frozen=True)
class UntrustedLimits:
    """What an untrusted image may cost: file bytes, declared raster pixels, decode wall time."""

    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    decode_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1 or not self.decode_seconds > 0:
            raise ConfigError(f"untrusted limits must be positive, got {self}")

    def check_bytes(self, path: Path, size: int) -> None:
        """Refuse a file of more than `max_bytes`."""
        if size > self.max_bytes:
            raise ImageLoadError(
                f"{path}: file is {size:,} bytes, over the untrusted limit of {self.max_bytes:,} bytes (max_bytes)"
            )

    def check_pixels(self, path: Path, width: int, height: int) -> None:
        """Refuse a raster whose header declares more than `max_pixels`."""
        if width * height > self.max_pixels:
            raise ImageLoadError(
                f"{path}: image declares {width}x{height} = {width * height:,} pixels, over the untrusted limit of "
                f"{self.max_pixels:,} pixels (max_pixels)"
            )

    def too_many_pixels(self, path: Path) -> ImageLoadError:
        """The refusal of a raster so large that Pillow would not even report its size."""
        return ImageLoadError(
            f"{path}: image declares more than the untrusted limit of {self.max_pixels:,} pixels (max_pixels)"
        )

    def too_slow(self, path: Path) -> ImageLoadError:
        """The refusal of a decode that ran past `decode_seconds`."""
        return ImageLoadError(
            f"{path}: decoding took longer than the untrusted limit of {self.decode_seconds:g} s (decode_seconds)"
        )


DEFAULT_LIMITS = UntrustedLimits()


def read_svg_markup(path: Path, limits: UntrustedLimits) -> bytes:
    """The SVG's markup, read (and, for .svgz, inflated) to at most `max_bytes`."""
    with open(path, "rb") as fh:
        data = fh.read(limits.max_bytes + 1)  # a file growing after its stat() is caught here
    limits.check_bytes(path, len(data))
    if data[:2] != b"\x1f\x8b":
        return data
    inflate = zlib.decompressobj(wbits=31)
    try:
        markup = inflate.decompress(data, limits.max_bytes + 1)
    except zlib.error as e:
        raise ImageLoadError(f"{path}: corrupt gzip stream in SVGZ ({e})") from e
    if len(markup) > limits.max_bytes:
        raise ImageLoadError(
            f"{path}: SVGZ inflates to more than the untrusted limit of {limits.max_bytes:,} bytes (max_bytes)"
        )
    return markup


class _Refused(Exception):
    """Raised from an expat handler to stop the parse of a refused document."""


def _qname(name: str) -> str:
    # expat joins namespace and local name with the separator; ElementTree spells it {namespace}local.
    return "{" + name if "}" in name else name


def parse_svg_strict(markup: bytes, where: str) -> ET.Element:
    """Parse SVG markup with expat, refusing any DOCTYPE (hence any entity declaration) and unknown encodings."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")

    def refuse_doctype(*_: Any) -> None:
        raise _Refused("SVG declares a DOCTYPE (entities and external DTDs are refused for untrusted images)")

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.StartElementHandler = lambda name, attrs: builder.start(
        _qname(name), {_qname(k): v for k, v in attrs.items()}
    )
    parser.EndElementHandler = lambda name: builder.end(_qname(name))
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(markup, True)
        return builder.close()
    except _Refused as e:
        raise ImageLoadError(f"{where}: {e}") from e
    except (expat.ExpatError, ValueError) as e:
        raise ImageLoadError(f"{where}: unreadable SVG ({e})") from e


def _external(value: str) -> bool:
    """Whether an href or a CSS value refers to anything outside this document (files, URLs, data: URIs)."""
    return any(not target.startswith("#") for target in _CSS_URL.findall(value))


def _drops(el: ET.Element) -> bool:
    if el.tag.startswith("{" + XINCLUDE_NS + "}"):
        return True
    style = el.tag in (f"{{{SVG_NS}}}style", "style")
    return style and ("@import" in (el.text or "").lower() or _external(el.text or ""))


def sanitize_svg(root: ET.Element) -> ET.Element:
    """Remove, in place, every reference that leaves the document; returns the root.

    Dropped: each `href` (any namespace) that is not a `#fragment` — files, URLs and data: URIs
    alike, since a data: URI is another image to decode; each attribute whose CSS `url(...)` points
    elsewhere; `<style>` sheets that import or point elsewhere; XInclude elements. Comments and
    processing instructions (`<?xml-stylesheet?>`) were already left out by the parser.
    """
    for el in root.iter():
        for name in list(el.attrib):
            value = el.attrib[name]
            local = name.rsplit("}", 1)[-1]
            outside_href = local == "href" and not value.strip().startswith("#")
            if outside_href or ("url(" in value.lower() and _external(value)):
                del el.attrib[name]
        for child in [c for c in el if _drops(c)]:
            _remove_keeping_tail(el, child)
    return root


def _remove_keeping_tail(parent: ET.Element, child: ET.Element) -> None:
    # Text after a removed element (inside <text>, say) belongs to what came before it.
    if child.tail:
        siblings = list(parent)
        i = siblings.index(child)
        if i:
            siblings[i - 1].tail = (siblings[i - 1].tail or "") + child.tail
        else:
            parent.text = (parent.text or "") + child.tail
    parent.remove(child)


def safe_svg_markup(path: Path, limits: UntrustedLimits) -> bytes:
    """Read, check and sanitise an untrusted SVG; returns new UTF-8 markup with no external reference."""
    root = parse_svg_strict(read_svg_markup(path, limits), str(path))
    try:
        return ET.tostring(sanitize_svg(root), encoding="utf-8")
    except RecursionError as e:
        raise ImageLoadError(f"{path}: SVG nests elements too deeply") from e


def run_with_deadline(fn: Callable[[], T], seconds: float, on_timeout: Callable[[], Exception]) -> T:
    """Run `fn` in a worker thread and wait at most `seconds` for it; raises `on_timeout()` past that.

    This bounds the caller's wait, not the work: Python cannot stop a thread inside a C decoder,
    so an overrunning decode keeps its daemon thread (and its memory) until the decoder returns;
    its result is dropped. The pixel limit is what bounds that leftover work.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except Exception as e:  # carried to the caller's thread and re-raised there
            box["error"] = e

    worker = threading.Thread(target=target, name="mmgen-untrusted-decode", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise on_timeout()
    if "error" in box:
        raise box["error"]
    return box["value"]
