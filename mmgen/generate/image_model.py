"""A trained image generator on disk: `generator.safetensors` + `manifest.json` in `models/NAME/`.

The manifest names the encoder whose embedding space the generator is conditioned on (name and
checksum), the index it was trained from, the network shape and the diffusion settings. Loading
checks the weights' checksum and refuses a generator whose encoder differs from the index it is
about to draw neighbours from: the embeddings would mean nothing to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmgen.artifacts import read_model_manifest, write_json_atomic
from mmgen.errors import ManifestMismatchError, ModelLoadError

if TYPE_CHECKING:
    from mmgen.generate.unet import ConditionalUNet, UNetConfig

MANIFEST_TYPE = "mmgen.generator"
MANIFEST_FORMAT = 1
WEIGHTS = "generator.safetensors"
MANIFEST = "manifest.json"
DEFAULT_GENERATOR = "generator"
DEFAULT_BASELINE = "generator-noretrieval"


@dataclass
class GeneratorModel:
    """A loaded generator: the network (EMA weights, eval mode) and its manifest."""

    name: str
    path: Path
    net: ConditionalUNet
    manifest: dict[str, Any]

    @property
    def retrieval(self) -> bool:
        """Whether the generator is conditioned on retrieved image embeddings."""
        return bool(self.manifest["retrieval"])

    @property
    def neighbours(self) -> int:
        """Neighbours per sample it was trained with (0 without retrieval)."""
        return int(self.net.cfg.neighbours)

    @property
    def image_size(self) -> int:
        """Side of the generated pictures."""
        return int(self.net.cfg.image_size)

    @property
    def prediction(self) -> str:
        """What the network outputs: "v" or "x0" (see `mmgen.generate.diffusion`)."""
        return str(self.manifest.get("diffusion", {}).get("prediction", "v"))

    @property
    def checksum(self) -> str:
        """sha256 of the weights file."""
        return str(self.manifest["checksum"])

    def check_encoder(self, encoder: str, encoder_checksum: str) -> None:
        """Refuse an index or encoder other than the one the generator was trained against."""
        if encoder_checksum != self.manifest["encoder_checksum"]:
            raise ManifestMismatchError(
                f"generator {self.name!r} was trained on embeddings of {self.manifest['encoder']} "
                f"(checksum {self.manifest['encoder_checksum'][:12]}), not {encoder} (checksum {encoder_checksum[:12]}); "
                "use an index built with that encoder, or train a generator on this one"
            )


def generator_dir(models_dir: Path, name: str) -> Path:
    """Folder of a named generator (NAME, or NAME@N for a kept older version) inside a workspace's `models/`."""
    from mmgen.versions import version_folder

    return version_folder(models_dir, name)


def list_generators(models_dir: Path) -> list[str]:
    """Names of the trained generators in a `models/` folder."""
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if _is_generator(p))


def _is_generator(folder: Path) -> bool:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("type") == MANIFEST_TYPE
    except (OSError, ValueError):
        return False


def save_generator(net: ConditionalUNet, out_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the weights and the manifest (with the weights' checksum); returns the manifest written."""
    from safetensors.torch import save_file

    from mmgen.data.checksums import file_sha256
    from mmgen.durable import replacing

    with replacing(out_dir / WEIGHTS, "the generator's weights") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    full = {
        "type": MANIFEST_TYPE,
        "format": MANIFEST_FORMAT,
        **manifest,
        "unet": net.cfg.to_json(),
        "checksum": file_sha256(out_dir / WEIGHTS),
    }
    write_json_atomic(out_dir / MANIFEST, full)
    return full


def load_generator(models_dir: Path, name: str, device: str = "cpu") -> GeneratorModel:
    """Load a trained generator by name; ModelLoadError names the generators that exist."""
    from safetensors.torch import load_file

    from mmgen.data.checksums import file_sha256
    from mmgen.generate.unet import ConditionalUNet, UNetConfig

    folder = generator_dir(models_dir, name)
    manifest_path = folder / MANIFEST
    missing = ""
    if not manifest_path.is_file():
        found = list_generators(models_dir)
        hint = f"trained generators here: {', '.join(found)}" if found else "run `mmgen train generator` first"
        missing = f"no trained generator {name!r} in {models_dir}; {hint}"
    manifest = read_model_manifest(manifest_path, MANIFEST_TYPE, MANIFEST_FORMAT, "generator", missing)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ModelLoadError(f"generator {name!r}: {weights} is missing (training interrupted before export?)")
    if file_sha256(weights) != manifest.get("checksum"):
        raise ManifestMismatchError(f"generator {name!r}: {weights} does not match the checksum in its manifest")
    from mmgen.generate.diffusion import check_prediction

    check_prediction(str(manifest.get("diffusion", {}).get("prediction", "v")))
    cfg: UNetConfig = UNetConfig.from_json(manifest["unet"])
    net = ConditionalUNet(cfg)
    try:
        net.load_state_dict(load_file(str(weights)))
    except (RuntimeError, OSError) as exc:
        raise ModelLoadError(f"generator {name!r}: weights do not fit the network in its manifest ({exc})") from exc
    return GeneratorModel(name=name, path=folder, net=net.to(device).eval(), manifest=manifest)
