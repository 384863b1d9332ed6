"""Index presets: JSON files naming a FAISS factory string and its parameters.

A preset with `"binary": true` configures the binary index of packed codes (`mmgen index --hash`),
built with `faiss.index_binary_factory`; the others configure the float index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmgen.errors import ConfigError, UnknownNameError
from mmgen.resources import presets_path

PACKAGE_PRESETS = presets_path()
DEFAULT_PRESET = "flat-fp16"
DEFAULT_BINARY_PRESET = "binary-flat"


@dataclass(frozen=True)
class Preset:
    """A named FAISS configuration."""

    name: str
    factory: str
    description: str = ""
    min_train: int = 0
    build: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    binary: bool = False

    def to_json(self) -> dict[str, Any]:
        """The preset as stored in a manifest."""
        data: dict[str, Any] = {
            "name": self.name,
            "factory": self.factory,
            "min_train": self.min_train,
            "build": dict(self.build),
            "search": dict(self.search),
        }
        if self.binary:  # float presets keep their historical form
            data["binary"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preset:
        """Inverse of `to_json`."""
        return cls(
            name=str(data.get("name", data["factory"])),
            factory=str(data["factory"]),
            description=str(data.get("description", "")),
            min_train=int(data.get("min_train", 0)),
            build=dict(data.get("build", {})),
            search=dict(data.get("search", {})),
            binary=bool(data.get("binary", False)),
        )


def preset_dirs(workspace: Path | None = None) -> list[Path]:
    """Folders searched for presets, the workspace's own first."""
    dirs = []
    if workspace is not None:
        dirs.append(workspace / "presets")
    dirs.append(PACKAGE_PRESETS)
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def list_presets(workspace: Path | None = None) -> dict[str, Preset]:
    """All presets by name; a workspace preset overrides a shipped one of the same name."""
    found: dict[str, Preset] = {}
    for folder in reversed(preset_dirs(workspace)):
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                data.setdefault("name", path.stem)
                found[path.stem] = Preset.from_json(data)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"invalid index preset {path}: {exc}") from exc
    return found


def resolve_preset(name_or_factory: str | None, workspace: Path | None = None, binary: bool = False) -> Preset:
    """A preset by name, or an ad-hoc preset from a raw factory string such as `IVF256,Flat` (`BIVF256` when binary)."""
    presets = {n: p for n, p in list_presets(workspace).items() if p.binary == binary}
    name = name_or_factory or (DEFAULT_BINARY_PRESET if binary else DEFAULT_PRESET)
    if name in presets:
        return presets[name]
    if _looks_like_factory(name, binary):
        return Preset(name=name, factory=name, description="custom factory string", binary=binary)
    example = "BIVF256" if binary else "IVF256,Flat"
    kind = "binary index preset" if binary else "index preset"
    raise UnknownNameError(kind, name, list(presets) + [f"<any FAISS {kind.split()[0]} factory string, e.g. {example}>"])


def _looks_like_factory(text: str, binary: bool = False) -> bool:
    if binary:
        return any(part.strip().startswith(("BFlat", "BIVF", "BHNSW", "BHash")) for part in text.split(","))
    heads = ("Flat", "IVF", "HNSW", "PQ", "OPQ", "PCA", "LSH", "NSG", "SQ", "RFlat", "IDMap")
    return any(part.strip().startswith(heads) for part in text.split(","))
