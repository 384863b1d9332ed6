"""The encoder interface: text and images in, float32 L2-normalised rows out."""

from __future__ import annotations

import hashlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from mmgen.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

T = TypeVar("T")

_HASH_CHUNK = 1 << 20


class Encoder(ABC):
    """A model that embeds text (and, for joint encoders, images) into one cosine space."""

    name: str
    dim: int
    modalities: frozenset[str]

    def __init__(self) -> None:
        self._checksum: str | None = None
        self._checksum_lock = threading.Lock()

    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts: float32 `(len(texts), dim)`, rows L2-normalised.

        The default batch is 64: on CPU, batches of 64 length-sorted texts embed faster than 256."""
        _check_batch_size(batch_size)
        if isinstance(texts, str):
            raise ConfigError("encode_text takes a sequence of strings, not one string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._finish(self._encode_text(list(texts), batch_size), len(texts))

    def encode_image(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Embed RGB PIL images: float32 `(len(images), dim)`, rows L2-normalised."""
        if "image" not in self.modalities:
            raise ConfigError(f"encoder {self.name} embeds text only")
        _check_batch_size(batch_size)
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._finish(self._encode_image(list(images), batch_size), len(images))

    def checksum(self) -> str:
        """sha256 hex of the weights (checkpoint file, or the model folder's weight and config files)."""
        with self._checksum_lock:
            if self._checksum is None:
                self._checksum = self._compute_checksum()
            return self._checksum

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"

    @abstractmethod
    def _encode_text(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Backend hook: raw `(n, dim)` text embeddings for a non-empty list."""

    def _encode_image(self, images: list[Image.Image], batch_size: int) -> np.ndarray:
        """Backend hook: raw `(n, dim)` image embeddings for a non-empty list."""
        raise ConfigError(f"encoder {self.name} embeds text only")

    @abstractmethod
    def _compute_checksum(self) -> str:
        """Backend hook: sha256 hex identifying the weights."""

    def _finish(self, vectors: Any, n: int) -> np.ndarray:
        out = l2_normalise(np.asarray(vectors, dtype=np.float32))
        if out.shape != (n, self.dim):
            raise ConfigError(f"encoder {self.name} returned shape {out.shape}, expected {(n, self.dim)}")
        return out


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Float32 copy with unit-length rows; all-zero rows stay zero instead of turning into NaN."""
    out = np.array(vectors, dtype=np.float32, copy=True).reshape(len(vectors), -1)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}")


def configure_torch_threads() -> None:
    """Apply `MMGEN_THREADS` to torch when set; otherwise leave torch's own default alone."""
    if os.environ.get("MMGEN_THREADS"):
        import torch

        from mmgen.devices import cpu_threads

        torch.set_num_threads(cpu_threads())


def sha256_files(files: Iterable[Path], root: Path | None = None) -> str:
    """sha256 over files in sorted order; with `root`, each file's relative name is hashed too."""
    digest = hashlib.sha256()
    paths = sorted(Path(f) for f in files)
    for path in paths:
        if root is not None:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        if root is not None:
            digest.update(b"\0")
    return digest.hexdigest()


def sha256_state_dict(state_dict: dict[str, Any]) -> str:
    """sha256 over a torch state dict's names, shapes, dtypes and bytes (for weights with no file at hand)."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
