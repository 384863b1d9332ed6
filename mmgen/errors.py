"""Typed errors raised by the library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

# errno values that mean "no room left": the disk (ENOSPC) or the user's quota (EDQUOT).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class MmgenError(Exception):
    """Base class of every error mmgen raises on purpose."""


class UnknownNameError(MmgenError, KeyError):
    """A name (encoder, preset, source) that is not one of the valid choices."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.choices = sorted(choices)
        super().__init__(f"unknown {kind} {name!r}; valid choices: {', '.join(self.choices)}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class ConfigError(MmgenError):
    """Invalid settings or arguments."""


class DataError(MmgenError):
    """A corpus, manifest or record that cannot be read."""


class ImageLoadError(DataError):
    """One image that cannot be decoded (corrupt, truncated, empty, not an image)."""


class TextLoadError(DataError):
    """One caption that cannot be read (missing, not UTF-8)."""


class ModelLoadError(MmgenError):
    """Model weights or configuration that cannot be loaded (never replaced by a random init)."""


class VectorIndexError(MmgenError):
    """A FAISS index that cannot be built, loaded or searched."""


class ManifestMismatchError(VectorIndexError):
    """A saved artifact whose manifest disagrees with what the caller expects (encoder, dim, ...)."""


class StoreError(MmgenError):
    """The SQL store cannot be opened or migrated."""


class ConnectionLostError(StoreError):
    """The connection to the SQL server dropped mid-run; what was committed before it stays resumable."""


class RecordNotFoundError(MmgenError, LookupError):
    """A prompt, output or other stored record asked for by id that the store does not hold."""


class MissingDependencyError(MmgenError):
    """An optional dependency is not installed; the message names the package to install."""


class DiskFullError(MmgenError):
    """A write that failed for want of space (ENOSPC, EDQUOT); what was committed before it stays resumable."""

    def __init__(self, what: str, path: str | os.PathLike[str]) -> None:
        self.what = what
        self.path = str(path)
        super().__init__(
            f"disk full while writing {what} at {self.path}: free space and run the same command again to resume"
        )


@contextmanager
def disk_full_as_error(what: str, path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an OSError meaning "disk full" or "quota exceeded" inside the block into a DiskFullError."""
    try:
        yield
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(what, path) from exc
        raise
