"""Small CNN image towers registered with timm, so open_clip model configs can name them.

open_clip builds any timm model named by `vision_cfg.timm_model_name`; these are plain ResNets
(global average pooling, then open_clip's linear projection) sized for 64 px icons on a CPU.
Registration is idempotent and happens before a model config that names them is built.
"""

from __future__ import annotations

import threading
from typing import Any

TOWERS: dict[str, dict[str, Any]] = {
    # ResNet-10 layout (one BasicBlock per stage) at half the usual widths: about 1.2M parameters.
    "mmgen_resnet10_s": {"layers": [1, 1, 1, 1], "channels": (32, 64, 128, 256), "stem_width": 32},
    # Two blocks per stage, full widths up to 256: about 2.8M parameters.
    "mmgen_resnet18_s": {"layers": [2, 2, 2, 2], "channels": (32, 64, 128, 256), "stem_width": 32},
}
_lock = threading.Lock()


def register_timm_towers() -> None:
    """Make the TOWERS names known to timm (a no-op after the first call)."""
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    import timm
    from timm.models import register_model
    from timm.models.resnet import BasicBlock, ResNet

    with _lock:
        for name, layout in TOWERS.items():
            if timm.is_model(name):
                continue

            def build(pretrained: bool = False, _layout: dict[str, Any] = layout, **kwargs: Any) -> Any:
                if pretrained:
                    raise ValueError("mmgen's timm towers have no pretrained weights; train them with mmgen")
                for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
                    kwargs.pop(key, None)  # timm's factory passes these to every builder
                model = ResNet(block=BasicBlock, **_layout, **kwargs)
                # open_clip reads the pretrained config timm's own builders attach (pool size).
                model.pretrained_cfg = model.default_cfg = {"pool_size": None, "num_classes": model.num_classes}
                return model

            build.__name__ = name
            build.__qualname__ = name
            register_model(build)


def names_timm_tower(model_cfg: dict[str, Any]) -> bool:
    """Whether an open_clip model config uses one of these towers."""
    return (model_cfg.get("vision_cfg") or {}).get("timm_model_name") in TOWERS
