"""Content hashes of files and records, so re-indexing can skip what has not changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mmgen.data.records import Record
from mmgen.errors import ImageLoadError

CHUNK_SIZE = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            h.update(chunk)
    return h.hexdigest()


def record_sha256(record: Record) -> str:
    """Return the hex SHA-256 of a record's content: image bytes, caption and group (meta excluded).

    Each part is framed with a tag and its length, so ("ab", None) and ("a", "b") never collide.
    Raises ImageLoadError when the record names an image file that does not exist.
    """
    h = hashlib.sha256(b"mmgen-record-v1\0")
    if record.image is not None:
        p = Path(record.image)
        try:
            size = p.stat().st_size
            f = p.open("rb")
        except FileNotFoundError as e:
            raise ImageLoadError(f"{p}: file not found") from e
        except OSError as e:
            raise ImageLoadError(f"{p}: cannot read ({e.strerror or e})") from e
        h.update(b"image\0%d\0" % size)
        with f:
            while chunk := f.read(CHUNK_SIZE):
                h.update(chunk)
    for tag, value in ((b"text", record.text), (b"group", record.group)):
        if value is not None:
            data = value.encode("utf-8", "surrogatepass")
            h.update(b"%s\0%d\0" % (tag, len(data)))
            h.update(data)
    return h.hexdigest()
