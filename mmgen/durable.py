"""Files replaced whole or not at all: write a temporary beside the target, fsync, rename.

`replacing(path, what)` is how every saved artifact is written (model weights, manifests, training
states, FAISS and binary-code caches). Whatever goes wrong inside, the temporary is removed and the
previous file stays as it was; a full disk (or quota) becomes one `DiskFullError` naming the file.

Writers report a full disk in different ways: Python raises OSError(ENOSPC); FAISS and safetensors
raise errors whose text carries the C library's message; torch.save raises an opaque RuntimeError
("unexpected pos ..."). So a failure is also taken as a full disk when the target's filesystem has
(almost) no room left at the moment of the failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmgen.errors import DISK_FULL_ERRNOS, DiskFullError

DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")
NEARLY_FULL_BYTES = 1 << 20  # free space below this when a write fails: the disk was full


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write failed for want of space."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    if not isinstance(exc, (OSError, RuntimeError)):  # the writers' own failures; not a caller's bug or Ctrl-C
        return False
    if any(text in str(exc) for text in DISK_FULL_TEXTS):
        return True
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < NEARLY_FULL_BYTES


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: some filesystems refuse a directory fsync)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | os.PathLike[str], what: str, tmp: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to; then fsync it and rename it over `path`.

    On any failure the temporary is removed and `path` is untouched; a full disk raises DiskFullError
    (`what` names the content in its message). `tmp` overrides the temporary's name (default PATH.tmp).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tmp) if tmp is not None else path.with_name(path.name + ".tmp")
    try:
        yield temp
        with open(temp, "rb+") as fh:
            os.fsync(fh.fileno())
    except BaseException as exc:
        full = is_disk_full(exc, temp.parent)
        temp.unlink(missing_ok=True)
        if full:
            raise DiskFullError(what, path) from exc
        raise
    os.replace(temp, path)
    fsync_dir(path.parent)
