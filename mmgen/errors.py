"""Typed errors raised by the library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations

from collections.abc import Iterable


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


class RecordNotFoundError(MmgenError, LookupError):
    """A prompt, output or other stored record asked for by id that the store does not hold."""


class MissingDependencyError(MmgenError):
    """An optional dependency is not installed; the message names the package to install."""
