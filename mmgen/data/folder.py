"""A folder of images (recursive), each with an optional same-stem .txt caption."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from mmgen.data.images import IMAGE_SUFFIXES
from mmgen.data.records import Record
from mmgen.errors import DataError

CAPTION_SUFFIX = ".txt"


def folder_records(root: str | Path) -> Iterator[Record]:
    """Yield records for every image and caption under root, sorted by path; hidden entries are skipped.

    key is the path relative to root without extension (posix), so an image and its .txt share it;
    when two images share a stem (a.png, a.jpg) each keeps its extension in the key.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"folder not found: {base}")
    base = base.resolve()
    images: dict[str, list[Path]] = {}
    captions: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            suffix = path.suffix.lower()
            stem = path.relative_to(base).with_suffix("").as_posix()
            if suffix in IMAGE_SUFFIXES:
                images.setdefault(stem, []).append(path)
            elif suffix == CAPTION_SUFFIX:
                captions[stem] = path
    for stem in sorted(set(images) | set(captions)):
        text, error = _read_caption(captions[stem]) if stem in captions else (None, None)
        paths = sorted(images.get(stem, []))
        if not paths:
            if error is not None:
                yield Record(key=stem, error=error)
            elif text is not None:
                yield Record(key=stem, text=text)
            continue
        for path in paths:
            key = stem if len(paths) == 1 else path.relative_to(base).as_posix()
            meta = {"caption_file": str(captions[stem])} if stem in captions else {}
            yield Record(key=key, image=str(path), text=text, meta=meta, error=error)


def _read_caption(path: Path) -> tuple[str | None, str | None]:
    """Return (caption, error): a caption that is not UTF-8 or unreadable becomes an error reason."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        return None, f"caption unreadable: {path} ({e.strerror or e})"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return None, f"caption is not valid UTF-8: {path} (byte {e.start})"
    text = " ".join(text.split())
    return (text or None), None
