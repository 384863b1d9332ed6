"""Encoders: text and images to float32 L2-normalised vectors, chosen by a name string.

Importing this package is cheap; torch, open_clip and sentence-transformers load with a model.
"""

from mmgen.encoders.base import Encoder
from mmgen.encoders.factory import (
    DEFAULT_TEXT_ENCODER,
    EncoderSpec,
    clear_encoder_cache,
    encoder_choices,
    load_encoder,
    resolve_encoder_name,
)
from mmgen.encoders.openclip import save_openclip_checkpoint

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "Encoder",
    "EncoderSpec",
    "clear_encoder_cache",
    "encoder_choices",
    "load_encoder",
    "resolve_encoder_name",
    "save_openclip_checkpoint",
]
