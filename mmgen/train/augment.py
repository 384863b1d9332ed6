"""Style-bridging augmentation on whole uint8 batches in torch (cheap on CPU, runs on the GPU there).

What it changes and why (see ../shared/DATA.md, calibration): outline thickness (3x3 max filter
thins dark outlines, the main difference between OpenMoji and Twemoji; max-then-min removes thin
lines altogether), sharpness (blur), framing
(scale, aspect, shift) and mild saturation/contrast; never hue, because captions name colours.
Grayscale and mirroring are applied only where the caption allows (no colour word; no direction,
digit, letter, clock or flag).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmgen.errors import UnknownNameError

if TYPE_CHECKING:
    import torch

COLOUR_WORDS = re.compile(
    r"\b(red|orange|yellow|green|blue|purple|violet|brown|black|white|pink|gr[ae]y|gold(en)?|silver|"
    r"colou?r(ed|s|ful)?|light|dark|medium|skin tone)\b",
    re.IGNORECASE,
)
# Mirroring changes what these captions say (arrows, text, digits, clocks, asymmetric flags).
MIRROR_WORDS = re.compile(
    r"\b(left|right|arrow|arrows|letter|letters|keycap|digit|number|numbers|input|text|word|abc|sign|"
    r"clockwise|counterclockwise|anticlockwise|clock|o.clock|flag|flags|button|symbol|mark|"
    r"map|zodiac)\b|\d",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation; `none` turns all off."""

    scale: tuple[float, float] = (0.8, 1.05)  # zoom (below 1 shrinks the drawing inside the frame)
    aspect: float = 0.1  # width/height stretch, +- this fraction
    translate: float = 0.06  # shift, fraction of the side
    flip_p: float = 0.5
    thin_p: float = 0.3  # 3x3 max filter: thins dark outlines
    unline_p: float = 0.0  # 3x3 max then min filter: removes thin dark lines, keeps the size of filled areas
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.4, 1.0)
    saturation: float = 0.3  # factor in [1 - s, 1 + s]
    contrast: float = 0.2
    brightness: float = 0.15  # gamma in [exp(-b), exp(b)]: white and black stay put
    gray_p: float = 0.1

    @property
    def enabled(self) -> bool:
        """Whether any augmentation applies."""
        return self != NO_AUGMENT


NO_AUGMENT = AugmentConfig(
    scale=(1.0, 1.0), aspect=0.0, translate=0.0, flip_p=0.0, thin_p=0.0, unline_p=0.0, blur_p=0.0,
    saturation=0.0, contrast=0.0, brightness=0.0, gray_p=0.0,
)  # fmt: skip
AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "style": AugmentConfig(),
    "strong": AugmentConfig(
        scale=(0.7, 1.05), aspect=0.15, translate=0.08, thin_p=0.3, unline_p=0.3, blur_p=0.3, gray_p=0.15
    ),
    "none": NO_AUGMENT,
}


def augment_preset(name: str) -> AugmentConfig:
    """The augmentation preset called `name`."""
    try:
        return AUGMENT_PRESETS[name]
    except KeyError:
        raise UnknownNameError("augmentation preset", name, AUGMENT_PRESETS) from None


def caption_allows_gray(caption: str) -> bool:
    """Whether a caption names no colour (so a grayscale picture still matches it)."""
    return COLOUR_WORDS.search(caption) is None


def caption_allows_mirror(caption: str) -> bool:
    """Whether a caption names nothing that mirroring would change (direction, text, digits, flags)."""
    return MIRROR_WORDS.search(caption) is None


def augment_batch(
    pixels: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator,
    gray_ok: torch.Tensor | None = None,
    mirror_ok: torch.Tensor | None = None,
) -> torch.Tensor:
    """Augment uint8 `(B, H, W, 3)` pixels on white into float `(B, 3, H, W)` in [0, 1].

    Random draws come from `generator` (on the CPU) so a step is reproducible from its seed.
    `gray_ok` / `mirror_ok` are per-sample bool tensors; absent means allowed.
    """
    import torch
    import torch.nn.functional as F

    device = pixels.device
    x = pixels.permute(0, 3, 1, 2).float().div_(255.0)
    if not cfg.enabled:
        return x.contiguous()
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * (high - low) + low).to(device)

    def coin(p: float, allowed: torch.Tensor | None = None) -> torch.Tensor:
        hit = (torch.rand(n, generator=generator) < p).to(device)
        return hit & allowed.to(device) if allowed is not None else hit

    # Geometry in one resampling: zoom, stretch, shift, mirror; the frame outside stays white.
    zoom = uniform(*cfg.scale)
    stretch = torch.exp(uniform(-math.log1p(cfg.aspect), math.log1p(cfg.aspect)))
    mirror = torch.where(coin(cfg.flip_p, mirror_ok), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = mirror / (zoom * stretch)
    theta[:, 1, 1] = stretch / zoom
    theta[:, 0, 2] = uniform(-cfg.translate, cfg.translate) * 2
    theta[:, 1, 2] = uniform(-cfg.translate, cfg.translate) * 2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = 1.0 - F.grid_sample(1.0 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    unline = coin(cfg.unline_p)
    thin = coin(cfg.thin_p) & ~unline
    if thin.any():
        x[thin] = F.max_pool2d(x[thin], kernel_size=3, stride=1, padding=1)
    if unline.any():
        before = x[unline]
        bright = F.max_pool2d(before, kernel_size=3, stride=1, padding=1)
        after = -F.max_pool2d(-bright, kernel_size=3, stride=1, padding=1)
        # A line drawing (black style, white fills) would vanish: keep those as they were.
        kept = _ink(after) >= 0.5 * _ink(before)
        x[unline] = torch.where(kept.view(-1, 1, 1, 1), after, before)
    blur = coin(cfg.blur_p)
    if blur.any():
        sigma = float(torch.empty(1).uniform_(*cfg.blur_sigma, generator=generator))
        x[blur] = _gaussian_blur(x[blur], sigma)

    # Colour jitter that keeps the white background white (as every inference picture has it).
    gray = _luma(x)
    saturation = uniform(1 - cfg.saturation, 1 + cfg.saturation).view(n, 1, 1, 1)
    x = (gray + (x - gray) * saturation).clamp_(0.0, 1.0)
    contrast = uniform(1 - cfg.contrast, 1 + cfg.contrast).view(n, 1, 1, 1)
    x = 1.0 - (1.0 - x) * contrast  # darkness scaled from white
    gamma = torch.exp(uniform(-cfg.brightness, cfg.brightness)).view(n, 1, 1, 1)
    x = x.clamp_(0.0, 1.0) ** gamma
    to_gray = coin(cfg.gray_p, gray_ok)
    if to_gray.any():
        x[to_gray] = _luma(x[to_gray]).expand(-1, 3, -1, -1)
    return x.clamp_(0.0, 1.0).contiguous()


def _ink(x: torch.Tensor) -> torch.Tensor:
    """Fraction of clearly inked (not white, not faint grey) pixels per picture."""
    return (x.amin(dim=1) < 0.5).float().mean(dim=(1, 2))


def _luma(x: torch.Tensor) -> torch.Tensor:
    weights = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    radius = max(1, math.ceil(2 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    # Pad with white (replicate keeps the border colour, which is white around a drawing).
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
