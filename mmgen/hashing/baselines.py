"""FAISS's own unsupervised binary codes, the baselines the autoencoder must beat at equal bits.

- `lsh`: random hyperplanes (`IndexLSH` with a random rotation), no training.
- `itq`: PCA to B dimensions and an iterative-quantisation rotation (`ITQ{B},LSH`).
- `pca`: PCA to B dimensions, then the sign (`PCA{B},LSH`).

Codes come out of FAISS's standalone codec (`sa_encode`), packed as the binary indexes take them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmgen.errors import ConfigError, UnknownNameError, VectorIndexError
from mmgen.index.codes import check_bits

BASELINES = ("lsh", "itq", "pca")


class FaissBaseline:
    """One FAISS binary codec, trained on float vectors, encoding them to packed codes."""

    def __init__(self, kind: str, dim: int, bits: int, seed: int = 0) -> None:
        import faiss

        if kind not in BASELINES:
            raise UnknownNameError("binary baseline", kind, BASELINES)
        self.kind = kind
        self.dim = int(dim)
        self.bits = check_bits(bits)
        if kind == "lsh":
            self.index: Any = _lsh(self.dim, self.bits, seed)
        else:
            if self.bits > self.dim:
                raise ConfigError(f"{kind.upper()} cannot make {bits} bits from {dim}-d vectors")
            self.index = faiss.index_factory(self.dim, f"{kind.upper()}{self.bits},LSH")

    @classmethod
    def from_index(cls, kind: str, bits: int, index: Any) -> FaissBaseline:
        """A baseline around a trained FAISS codec (as `faiss.read_index` gives it back)."""
        if kind not in BASELINES:
            raise UnknownNameError("binary baseline", kind, BASELINES)
        out = cls.__new__(cls)
        out.kind, out.dim, out.bits, out.index = kind, int(index.d), check_bits(bits), index
        if index.sa_code_size() * 8 < out.bits:
            raise VectorIndexError(f"a {kind} codec of {index.sa_code_size()} bytes cannot hold {bits} bits")
        return out

    @property
    def name(self) -> str:
        """Display name, e.g. `ITQ-64`."""
        return f"{self.kind.upper()}-{self.bits}"

    def train(self, vectors: np.ndarray) -> FaissBaseline:
        """Fit PCA / ITQ on float32 vectors (LSH has nothing to fit); returns self."""
        vectors = self._check(vectors)
        if not self.index.is_trained:
            self.index.train(vectors)
        return self

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Packed uint8 codes (n, bits // 8)."""
        vectors = self._check(vectors)
        if not self.index.is_trained:
            raise VectorIndexError(f"{self.name} must be trained before it encodes")
        codes = self.index.sa_encode(vectors)
        return np.ascontiguousarray(codes.reshape(len(vectors), -1)[:, : self.bits // 8], dtype=np.uint8)

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise VectorIndexError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        return vectors


def _lsh(dim: int, bits: int, seed: int) -> Any:
    """`IndexLSH` whose random rotation is drawn from `seed` (FAISS seeds it with a constant otherwise)."""
    import faiss

    index = faiss.IndexLSH(dim, bits, True, False)
    index.rrot.init(seed)
    return index
