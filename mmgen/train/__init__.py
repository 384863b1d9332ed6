"""Training: the joint image-text encoder (`train_encoder`, image towers shipped as open_clip configs),
the semantic-hashing autoencoder (`train_hasher`), the caption decoder (`train_captioner`) and the
image generator (`train_generator`).

Importing this package is cheap; torch and open_clip load when training starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmgen._lazy import lazy_getattr

if TYPE_CHECKING:
    from mmgen.train.augment import AUGMENT_PRESETS as AUGMENT_PRESETS
    from mmgen.train.data import DataReport as DataReport
    from mmgen.train.encoder import StepInfo as StepInfo
    from mmgen.train.encoder import TrainConfig as TrainConfig
    from mmgen.train.encoder import TrainResult as TrainResult
    from mmgen.train.encoder import train_encoder as train_encoder
    from mmgen.train.towers import DEFAULT_TOWER as DEFAULT_TOWER
    from mmgen.train.towers import default_configs as default_configs
    from mmgen.train.towers import tower_choices as tower_choices
    from mmgen.train.hasher import HasherConfig as HasherConfig
    from mmgen.train.hasher import train_hasher as train_hasher
    from mmgen.train.captioner import CaptionerConfig as CaptionerConfig
    from mmgen.train.captioner import train_captioner as train_captioner
    from mmgen.train.generator import GeneratorConfig as GeneratorConfig
    from mmgen.train.generator import train_generator as train_generator

_LAZY = {
    "HasherConfig": "mmgen.train.hasher",
    "train_hasher": "mmgen.train.hasher",
    "CaptionerConfig": "mmgen.train.captioner",
    "train_captioner": "mmgen.train.captioner",
    "GeneratorConfig": "mmgen.train.generator",
    "train_generator": "mmgen.train.generator",
    "TrainConfig": "mmgen.train.encoder",
    "TrainResult": "mmgen.train.encoder",
    "StepInfo": "mmgen.train.encoder",
    "train_encoder": "mmgen.train.encoder",
    "DataReport": "mmgen.train.data",
    "AUGMENT_PRESETS": "mmgen.train.augment",
    "DEFAULT_TOWER": "mmgen.train.towers",
    "default_configs": "mmgen.train.towers",
    "tower_choices": "mmgen.train.towers",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
