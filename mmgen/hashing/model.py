"""The semantic-hashing autoencoder: network, saved form (weights + manifest) and the loaded `Hasher`;
`load_hasher` loads any saved hasher (the autoencoder, or a FAISS baseline: `mmgen.hashing.saved`).

Network: per-modality centring (image and text embeddings of a joint encoder sit in two
different cones; centring each is what lets one code space rank across them), an MLP to B
code units, binarised by sign (straight-through during training), and an MLP decoder that
reconstructs the embedding from the code.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.artifacts import read_model_manifest, write_json_atomic
from mmgen.data.checksums import file_sha256
from mmgen.errors import ConfigError, ModelLoadError
from mmgen.hashing.base import AUTOENCODER, MANIFEST_FORMAT, MANIFEST_TYPE, MODALITY_IDS, BaseHasher, modality_id
from mmgen.index.codes import check_bits, pack_codes

if TYPE_CHECKING:
    import torch

WEIGHTS = "hasher.pt"
ENCODE_BATCH = 8192
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class NetConfig:
    """Shape of the network: what a manifest must say to rebuild it."""

    dim: int
    bits: int
    hidden: int = 1024  # 0: a linear hash (one matrix per code), no hidden layer

    def to_json(self) -> dict[str, int]:
        """The shape as stored in the manifest."""
        return {"dim": self.dim, "bits": self.bits, "hidden": self.hidden}


def build_net(cfg: NetConfig) -> torch.nn.Module:
    """A fresh (untrained) hashing network of the given shape."""
    import torch

    class HashNet(torch.nn.Module):
        """Centre per modality -> MLP -> B logits (sign = code); decoder: code -> embedding."""

        def __init__(self) -> None:
            super().__init__()
            self.centre = torch.nn.Parameter(torch.zeros(len(MODALITY_IDS), cfg.dim))
            self.encoder = _mlp(cfg.dim, cfg.hidden, cfg.bits)
            self.decoder = _mlp(cfg.bits, cfg.hidden, cfg.dim)

        def forward(self, x: torch.Tensor, modality: int) -> torch.Tensor:
            return self.encoder(x - self.centre[modality])

    return HashNet()


def _mlp(d_in: int, hidden: int, d_out: int) -> torch.nn.Module:
    import torch

    if hidden <= 0:
        return torch.nn.Linear(d_in, d_out)
    return torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, d_out))


def check_name(name: str) -> str:
    """A hasher name must be usable as a folder name."""
    if not _NAME.match(name):
        raise ConfigError(f"hasher name {name!r} must be letters, digits, '.', '_' or '-' (a folder name)")
    return name


class Hasher(BaseHasher):
    """A trained hashing network with its manifest: float embeddings in, packed codes out."""

    has_logits = True

    def __init__(self, net: torch.nn.Module, manifest: dict[str, Any], path: Path | None = None) -> None:
        super().__init__(manifest, path)
        self.net = net.eval()

    def logits(self, vectors: np.ndarray, modality: str) -> np.ndarray:
        """Real-valued code units before the sign (float32, (n, bits))."""
        import torch

        vectors = self._check(vectors)
        mod = modality_id(modality)
        out = np.empty((len(vectors), self.bits), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(vectors), ENCODE_BATCH):
                # a copy: the rows may be a read-only memory map, which torch will not wrap
                chunk = torch.from_numpy(np.array(vectors[start : start + ENCODE_BATCH]))
                out[start : start + len(chunk)] = self.net(chunk, mod).float().numpy()
        return out

    def soft(self, vectors: np.ndarray, modality: str) -> np.ndarray:
        """Real-valued codes in (-1, 1): tanh of the logits (the query side of asymmetric scoring)."""
        return np.tanh(self.logits(vectors, modality))

    def encode(self, vectors: np.ndarray, modality: str) -> np.ndarray:
        """Packed uint8 codes (n, bits // 8) of float embeddings of one modality."""
        return pack_codes(self.logits(vectors, modality) > 0)


# ---- saving and loading --------------------------------------------------------------------
def save_hasher(net: torch.nn.Module, manifest: dict[str, Any], folder: Path) -> Hasher:
    """Write weights then manifest (with the weights' checksum) atomically; returns the saved hasher."""
    import torch

    from mmgen.durable import replacing

    with replacing(folder / WEIGHTS, "the hasher's weights") as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)
    manifest = {"method": AUTOENCODER, **manifest, "type": MANIFEST_TYPE, "format": MANIFEST_FORMAT,
                "checksum": file_sha256(folder / WEIGHTS)}  # fmt: skip
    write_json_atomic(folder / "manifest.json", manifest)
    return Hasher(net, manifest, folder)


def hasher_folder(name_or_path: str, models_dir: Path) -> Path:
    """Where a hasher lives: a folder path, or a name under the workspace's `models/`."""
    candidate = Path(name_or_path).expanduser()
    if os.sep in name_or_path or candidate.is_absolute():
        return candidate.resolve()
    from mmgen.versions import split_version, version_folder

    check_name(split_version(name_or_path)[0])
    return version_folder(models_dir, name_or_path)  # NAME, or NAME@N for a kept older version


def read_hasher_manifest(folder: Path) -> dict[str, Any]:
    """A hasher's manifest; ModelLoadError when missing, unreadable or not a hasher's."""
    return read_model_manifest(
        folder / "manifest.json",
        MANIFEST_TYPE,
        MANIFEST_FORMAT,
        "hasher",
        f"no hasher at {folder} (missing manifest.json); train one with `mmgen train hasher`",
    )


def load_hasher(name_or_path: str, models_dir: Path) -> BaseHasher:
    """Load a saved hasher of any method; its weights (or codec) must match the checksum its manifest recorded.

    A manifest without `method` (written before baselines could be saved) is an autoencoder's.
    """
    folder = hasher_folder(name_or_path, models_dir)
    manifest = read_hasher_manifest(folder)
    method = manifest.get("method", AUTOENCODER)
    if method == AUTOENCODER:
        return load_autoencoder(folder, manifest)
    from mmgen.hashing.saved import load_baseline

    return load_baseline(folder, manifest)


def load_autoencoder(folder: Path, manifest: dict[str, Any]) -> Hasher:
    """The autoencoder saved in `folder` (its manifest already read); the weights must match its checksum."""
    import torch

    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ModelLoadError(f"hasher {folder} has a manifest but no {WEIGHTS}")
    if file_sha256(weights) != manifest.get("checksum"):
        raise ModelLoadError(f"{weights} does not match the checksum in its manifest (modified or half-written)")
    try:
        cfg = NetConfig(int(manifest["dim"]), check_bits(int(manifest["bits"])), int(manifest.get("hidden", 0)))
        net = build_net(cfg)
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (KeyError, ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"cannot load hasher {folder}: {exc}") from exc
    return Hasher(net, manifest, folder)

