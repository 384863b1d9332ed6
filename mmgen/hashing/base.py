"""What every hasher is: a saved model (folder + manifest) that turns float vectors of one modality into packed codes.

Two kinds share this interface: the trained autoencoder (`mmgen.hashing.model.Hasher`, method
`autoencoder`) and a saved FAISS baseline (`mmgen.hashing.saved.BaselineHasher`, methods `lsh`,
`itq`, `pca`). Only a method with real-valued code units (the autoencoder) has `logits`, which
the asymmetric short list of `mmgen search --mode rerank` needs; `has_logits` says which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmgen.errors import ConfigError, ManifestMismatchError
from mmgen.index.codes import check_bits

MANIFEST_TYPE = "mmgen.hasher"
MANIFEST_FORMAT = 1
MODALITY_IDS = {"image": 0, "text": 1}
AUTOENCODER = "autoencoder"


class BaseHasher:
    """The parts every hasher shares: its manifest, shape, identity and the index check."""

    has_logits = False  # True where `logits(vectors, modality)` gives real-valued code units

    def __init__(self, manifest: dict[str, Any], path: Path | None = None) -> None:
        self.manifest = manifest
        self.path = path
        self.bits = check_bits(int(manifest["bits"]))
        self.dim = int(manifest["dim"])

    @property
    def name(self) -> str:
        """The hasher's name (its folder under the workspace's `models/`)."""
        return str(self.manifest["name"])

    @property
    def method(self) -> str:
        """`autoencoder`, `lsh`, `itq` or `pca` (manifests written before baselines were saved: autoencoder)."""
        return str(self.manifest.get("method", AUTOENCODER))

    @property
    def checksum(self) -> str:
        """sha256 of the saved weights or codec: changes whenever the hasher is retrained."""
        return str(self.manifest.get("checksum", ""))

    def encode(self, vectors: np.ndarray, modality: str) -> np.ndarray:
        """Packed uint8 codes (n, bits // 8) of float embeddings of one modality."""
        raise NotImplementedError

    def check_index(self, *, index: str, encoder: str, encoder_checksum: str, dim: int) -> None:
        """Refuse an index whose vectors come from another encoder than the one this hasher learned."""
        trained = self.manifest.get("encoder_checksum")
        if trained != encoder_checksum:
            method = "" if self.method == AUTOENCODER else f" --method {self.method}"
            raise ManifestMismatchError(
                f"hasher {self.name!r} was trained on embeddings of {self.manifest.get('encoder')} "
                f"(checksum {str(trained)[:12]}), but index {index!r} holds embeddings of {encoder} "
                f"(checksum {encoder_checksum[:12]}); train a hasher on this index: "
                f"`mmgen train hasher --index {index}{method} --bits {self.bits}`"
            )
        if dim != self.dim:
            raise ManifestMismatchError(
                f"hasher {self.name!r} takes {self.dim}-d vectors; index {index!r} holds {dim}-d"
            )

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ManifestMismatchError(
                f"hasher {self.name!r} takes vectors of shape (n, {self.dim}), got {vectors.shape}"
            )
        return vectors


def modality_id(modality: str) -> int:
    """0 for image, 1 for text; ConfigError otherwise."""
    if modality not in MODALITY_IDS:
        raise ConfigError(f"modality must be one of {', '.join(MODALITY_IDS)}, not {modality!r}")
    return MODALITY_IDS[modality]
