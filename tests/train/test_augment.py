"""Augmentation: shapes, ranges, determinism, colour-preserving rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmgen.errors import UnknownNameError
from mmgen.train.augment import augment_batch, augment_preset, caption_allows_gray, caption_allows_mirror


def batch(n: int = 16, side: int = 32) -> torch.Tensor:
    rng = np.random.default_rng(0)
    x = np.full((n, side, side, 3), 255, dtype=np.uint8)
    x[:, 8:24, 8:24] = rng.integers(0, 200, (n, 1, 1, 3), dtype=np.uint8)
    return torch.from_numpy(x)


def test_shape_range_and_seeded() -> None:
    cfg = augment_preset("style")
    a = augment_batch(batch(), cfg, torch.Generator().manual_seed(1))
    b = augment_batch(batch(), cfg, torch.Generator().manual_seed(1))
    c = augment_batch(batch(), cfg, torch.Generator().manual_seed(2))
    assert a.shape == (16, 3, 32, 32) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_none_is_identity() -> None:
    x = batch()
    out = augment_batch(x, augment_preset("none"), torch.Generator().manual_seed(0))
    assert torch.allclose(out, x.permute(0, 3, 1, 2).float() / 255)


def test_gray_only_where_allowed() -> None:
    cfg = augment_preset("style").__class__(gray_p=1.0, saturation=0.0)
    x = batch()
    allowed = torch.zeros(16, dtype=torch.bool)
    allowed[:4] = True
    out = augment_batch(x, cfg, torch.Generator().manual_seed(0), gray_ok=allowed)
    spread = (out.max(dim=1).values - out.min(dim=1).values).amax(dim=(1, 2))
    assert torch.all(spread[:4] < 1e-6)
    assert torch.all(spread[4:] > 0.05)


def test_caption_rules() -> None:
    assert not caption_allows_gray("a red apple")
    assert not caption_allows_gray("thumbs up: medium skin tone")
    assert caption_allows_gray("bus, school, vehicle")
    assert not caption_allows_mirror("left arrow")
    assert not caption_allows_mirror("keycap: 3")
    assert not caption_allows_mirror("flag: Ireland")
    assert caption_allows_mirror("grinning face")
    with pytest.raises(UnknownNameError):
        augment_preset("wild")


def test_outline_removal_spares_line_drawings() -> None:
    cfg = augment_preset("none").__class__(
        scale=(1.0, 1.0), aspect=0.0, translate=0.0, flip_p=0.0, thin_p=0.0, unline_p=1.0, blur_p=0.0,
        saturation=0.0, contrast=0.0, brightness=0.0, gray_p=0.0,
    )  # fmt: skip
    x = np.full((2, 32, 32, 3), 255, dtype=np.uint8)
    x[0, 6:26, 6:26] = (0, 0, 0)  # filled square with a red core: outline removal keeps it inked
    x[0, 9:23, 9:23] = (220, 30, 30)
    x[1, 6:26, 6] = x[1, 6:26, 25] = x[1, 6, 6:26] = x[1, 25, 6:26] = (0, 0, 0)  # outline only: must survive
    out = augment_batch(torch.from_numpy(x), cfg, torch.Generator().manual_seed(0))
    inked = (out.amin(dim=1) < 0.5).float().mean(dim=(1, 2))
    assert inked[0] > 0.2
    assert torch.allclose(out[1], torch.from_numpy(x[1]).permute(2, 0, 1).float() / 255)
