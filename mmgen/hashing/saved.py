"""A FAISS baseline (LSH / ITQ / PCA-sign) saved as a hasher: fitted on an index's training vectors, attached and
searched like the autoencoder.

Saved form: WORKSPACE/models/NAME/ with the FAISS codec (`codec.faiss`, `faiss.write_index`) and
the autoencoder's model manifest (type `mmgen.hasher`, same format) with `"method": "lsh"|"itq"|"pca"`
and checksum = sha256 of the codec file. One codec encodes both modalities. The fit holds out
the same seeded groups as the autoencoder (recorded in the manifest, so `mmgen eval hashing`
measures a saved baseline on the same queries) and trains on the rest of both modalities
concatenated, as the evaluation's on-the-fly baselines do: one FAISS `train` call, no loop.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import mmgen
from mmgen.artifacts import register_model, write_json_atomic
from mmgen.data.checksums import file_sha256
from mmgen.errors import ConfigError, ModelLoadError, VectorIndexError
from mmgen.hashing.base import MANIFEST_FORMAT, MANIFEST_TYPE, BaseHasher, modality_id
from mmgen.hashing.baselines import BASELINES, FaissBaseline
from mmgen.hashing.data import heldout_groups

if TYPE_CHECKING:
    from mmgen.hashing.data import IndexVectors
    from mmgen.workspace import Workspace

CODEC = "codec.faiss"
MODEL_KIND = "hasher"
DEFAULT_HOLDOUT = 0.1  # of the groups, as `mmgen train hasher --holdout` defaults
DEFAULT_HOLDOUT_SEED = 0
_SPEC = re.compile(r"^(" + "|".join(BASELINES) + r")-([0-9]+)$")


class BaselineHasher(BaseHasher):
    """A saved FAISS baseline: one codec for both modalities, packed codes out (no real-valued logits)."""

    def __init__(self, codec: FaissBaseline, manifest: dict[str, Any], path: Path | None = None) -> None:
        super().__init__(manifest, path)
        self.codec = codec

    def encode(self, vectors: np.ndarray, modality: str) -> np.ndarray:
        """Packed uint8 codes (n, bits // 8); the same codec for images and texts."""
        modality_id(modality)
        return self.codec.encode(self._check(vectors))


def baseline_spec(name: str) -> tuple[str, int] | None:
    """(method, bits) when `name` reads like `lsh-64`, `itq-128`, `pca-32`; else None."""
    found = _SPEC.match(name)
    return (found.group(1), int(found.group(2))) if found else None


def training_vectors(train: IndexVectors) -> np.ndarray:
    """The training vectors of both modalities concatenated (image, then text), as `mmgen eval hashing` fits."""
    parts = [train.modalities[m].vectors for m in ("image", "text") if m in train.modalities]
    return np.concatenate(parts) if parts else np.zeros((0, train.dim), dtype=np.float32)


def fit_baseline(train: IndexVectors, method: str, bits: int, seed: int = 0) -> FaissBaseline:
    """One FAISS codec fitted on the training part of an index; ConfigError when it cannot be."""
    codec = FaissBaseline(method, train.dim, bits, seed)  # refuses PCA / ITQ with bits > dim
    vectors = training_vectors(train)
    need = 1 if method == "lsh" else codec.bits
    if len(vectors) < need:
        raise ConfigError(
            f"{method.upper()} needs at least {need} training vectors for {codec.bits} bits; "
            f"index {train.index!r} has {len(vectors)} after the hold-out"
        )
    return codec.train(vectors)


def train_baseline(
    ws: Workspace,
    data: IndexVectors,
    method: str,
    bits: int,
    name: str | None = None,
    *,
    holdout_fraction: float = DEFAULT_HOLDOUT,
    holdout_seed: int = DEFAULT_HOLDOUT_SEED,
    seed: int = 0,
    config: dict[str, Any] | None = None,
) -> tuple[BaselineHasher, int]:
    """Fit a baseline on an index's vectors (held-out groups excluded), save and register it; (hasher, model id)."""
    from mmgen.hashing.model import check_name

    name = check_name(name or f"{data.index}-{method}-{bits}b")
    held = heldout_groups(data.groups(), holdout_fraction, holdout_seed)
    train, _ = data.split(set(held))
    started = time.perf_counter()
    codec = fit_baseline(train, method, bits, seed)
    seconds = time.perf_counter() - started
    manifest: dict[str, Any] = {
        "name": name,
        "kind": MODEL_KIND,
        "method": method,
        "code_version": mmgen.__version__,
        "index": data.index,
        "encoder": data.encoder,
        "encoder_checksum": data.encoder_checksum,
        "dim": data.dim,
        "bits": codec.bits,
        "seed": seed,
        "codec": CODEC,
        "holdout": {"fraction": holdout_fraction, "seed": holdout_seed, "groups": held},
        "training_vectors": {m: len(v) for m, v in train.modalities.items()},
        "config": dict(config or {"method": method, "bits": bits, "holdout_fraction": holdout_fraction,
                                  "holdout_seed": holdout_seed, "seed": seed}),  # fmt: skip
        "train_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    folder = ws.models_dir / name
    from mmgen.versions import set_aside, settle

    prior = set_aside(ws, MODEL_KIND, name)
    hasher = save_baseline(codec, manifest, folder)
    model_id = register_model(ws, MODEL_KIND, hasher.name, folder, hasher.checksum, hasher.manifest)
    settle(ws, MODEL_KIND, name, prior, hasher.checksum)
    return hasher, model_id


def save_baseline(codec: FaissBaseline, manifest: dict[str, Any], folder: Path) -> BaselineHasher:
    """Write the codec then the manifest (with the codec's checksum) atomically; returns the saved hasher."""
    import faiss

    from mmgen.durable import replacing

    with replacing(folder / CODEC, "the hasher's codec") as tmp:
        faiss.write_index(codec.index, str(tmp))
    manifest = {**manifest, "method": codec.kind, "type": MANIFEST_TYPE, "format": MANIFEST_FORMAT,
                "checksum": file_sha256(folder / CODEC)}  # fmt: skip
    write_json_atomic(folder / "manifest.json", manifest)
    return BaselineHasher(codec, manifest, folder)


def load_baseline(folder: Path, manifest: dict[str, Any]) -> BaselineHasher:
    """The baseline saved in `folder` (its manifest already read); the codec must match its checksum."""
    import faiss

    method = manifest.get("method")
    if method not in BASELINES:
        raise ModelLoadError(
            f"hasher {folder} has an unknown method {method!r} (known: autoencoder, {', '.join(BASELINES)}); "
            "it was written by a newer mmgen, or its manifest was edited"
        )
    codec_path = folder / str(manifest.get("codec", CODEC))
    if not codec_path.is_file():
        raise ModelLoadError(f"hasher {folder} has a manifest but no {codec_path.name}")
    if file_sha256(codec_path) != manifest.get("checksum"):
        raise ModelLoadError(f"{codec_path} does not match the checksum in its manifest (modified or half-written)")
    try:
        codec = FaissBaseline.from_index(method, int(manifest["bits"]), faiss.read_index(str(codec_path)))
        if codec.dim != int(manifest["dim"]) or not codec.index.is_trained:
            raise ValueError(f"the codec takes {codec.dim}-d vectors (trained: {codec.index.is_trained}), "
                             f"the manifest says {manifest['dim']}-d")  # fmt: skip
        return BaselineHasher(codec, manifest, folder)
    except (KeyError, ValueError, RuntimeError, OSError, ConfigError, VectorIndexError) as exc:
        raise ModelLoadError(f"cannot load hasher {folder}: {exc}") from exc
