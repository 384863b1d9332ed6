"""Retrieval-augmented generators: captions from images and images from text.

Importing this package is cheap: torch loads on first use of a name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmgen._lazy import lazy_getattr

if TYPE_CHECKING:
    from mmgen.generate.caption import CaptionResult as CaptionResult
    from mmgen.generate.caption import CaptionSettings as CaptionSettings
    from mmgen.generate.caption import caption_images as caption_images
    from mmgen.generate.image import ImageGenerator as ImageGenerator

_LAZY = {
    "CaptionResult": "mmgen.generate.caption",
    "CaptionSettings": "mmgen.generate.caption",
    "caption_images": "mmgen.generate.caption",
    "ImageGenerator": "mmgen.generate.image",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
