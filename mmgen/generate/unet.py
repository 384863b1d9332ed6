"""The denoising network: a small conditional UNet for 64x64 RGB pictures, conditioned on embeddings.

The picture is folded 2x2 into channels first (pixel unshuffle) and unfolded at the end, so the
convolutions run at 32x32 while every one of the 64x64x3 outputs is still predicted: the same
trick as Simple Diffusion's and U-ViT's patching, and what makes training on two CPU cores feasible.

Conditioning, all in the joint encoder's space (`cond_dim`, 384 for the product model):
- the prompt's text embedding and the mean of the retrieved image embeddings are added to the
  timestep embedding (scale and shift of every residual block's normalisation);
- the text embedding and each retrieved image embedding are also tokens that the low-resolution
  levels cross-attend to, so the network can weigh neighbours one by one.
Dropped conditions (classifier-free guidance) are replaced by learned null vectors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmgen.errors import ConfigError


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the denoiser; stored in the generator's manifest and rebuilt from it."""

    image_size: int = 64
    patch: int = 2  # pixel-unshuffle factor: convolutions run at image_size / patch
    channels: tuple[int, ...] = (64, 96, 160)  # width of each resolution level
    blocks: int = 1  # residual blocks per level on the way down (one more on the way up)
    attention: tuple[int, ...] = (1, 2)  # levels with self- and cross-attention
    heads: int = 4
    cond_dim: int = 384
    neighbours: int = 4  # retrieved image embeddings per sample (0: text only, the no-retrieval baseline)
    dropout: float = 0.0

    def check(self) -> None:
        """Raise ConfigError for shapes the network cannot be built with."""
        if self.image_size % (self.patch * 2 ** (len(self.channels) - 1)):
            raise ConfigError(
                f"image_size {self.image_size} must be divisible by patch x 2^(levels-1) "
                f"= {self.patch * 2 ** (len(self.channels) - 1)}"
            )
        if not self.channels or any(c % 8 or c % self.heads for c in self.channels):
            raise ConfigError(f"channels {self.channels} must be multiples of 8 and of heads={self.heads}")
        if any(level < 0 or level >= len(self.channels) for level in self.attention):
            raise ConfigError(f"attention levels {self.attention} must be in 0..{len(self.channels) - 1}")
        if self.neighbours < 0 or self.cond_dim < 1 or self.blocks < 1:
            raise ConfigError("neighbours must be >= 0, cond_dim and blocks >= 1")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UNetConfig:
        """Inverse of `to_json`; unknown keys are an error, not ignored."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown UNet settings {sorted(unknown)}; known: {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        cfg = cls(**values)
        cfg.check()
        return cfg


@dataclass
class Conditions:
    """What one batch is conditioned on; `keep_*` False means dropped (classifier-free guidance)."""

    text: torch.Tensor  # (B, cond_dim)
    neighbours: torch.Tensor | None = None  # (B, k, cond_dim)
    keep_text: torch.Tensor | None = None  # (B,) bool
    keep_neighbours: torch.Tensor | None = None  # (B,) bool
    extra: dict[str, Any] = field(default_factory=dict)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of continuous times in [0, 1] (scaled to the usual 0..1000 range)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    # Up-path inputs are concatenations (e.g. 96 + 48): the largest group count <= 32 that divides them.
    return nn.GroupNorm(math.gcd(32, channels), channels)


class ResBlock(nn.Module):
    """Two 3x3 convolutions; the conditioning vector scales and shifts the second normalisation."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = _norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over positions, then cross-attention to the condition tokens."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = _norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.norm_x = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels)
        self.proj_x = nn.Linear(channels, channels)
        for layer in (self.proj, self.proj_x):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def _merge(self, t: torch.Tensor) -> torch.Tensor:
        b, h, n, d = t.shape
        return t.transpose(1, 2).reshape(b, n, h * d)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        h = self._merge(F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v)))
        seq = x.flatten(2).transpose(1, 2) + self.proj(h)
        q = self.q(self.norm_x(seq))
        k, v = self.kv(tokens).chunk(2, dim=-1)
        h = self._merge(F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v)))
        seq = seq + self.proj_x(h)
        return seq.transpose(1, 2).reshape(b, c, hgt, wid)


class ConditionalUNet(nn.Module):
    """Predicts v (the velocity of v-parameterised diffusion) for noisy pictures, times and conditions."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        cfg.check()
        self.cfg = cfg
        c0 = cfg.channels[0]
        emb_dim = 4 * c0
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(c0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_scale = math.sqrt(cfg.cond_dim)
        self.null_text = nn.Parameter(torch.zeros(cfg.cond_dim))
        self.text_vec = nn.Linear(cfg.cond_dim, emb_dim)
        if cfg.neighbours:
            # Attention and the mean pool take any number of neighbours; `neighbours` is what training used.
            self.null_neighbours = nn.Parameter(torch.zeros(cfg.cond_dim))
            self.neigh_vec = nn.Linear(cfg.cond_dim, emb_dim)
        # Tokens: one projection per attention width (the middle always attends); a learned type vector
        # tells the text token from the neighbour tokens.
        self.deepest = len(cfg.channels) - 1
        attending = sorted({*cfg.attention, self.deepest})
        self.token_dim = max(cfg.channels[i] for i in attending)
        self.token_in = nn.Linear(cfg.cond_dim, self.token_dim)
        self.token_type = nn.Parameter(torch.zeros(2, self.token_dim))
        self.token_norm = nn.LayerNorm(self.token_dim)
        self.token_proj = nn.ModuleDict({str(i): nn.Linear(self.token_dim, cfg.channels[i]) for i in attending})

        p2 = cfg.patch * cfg.patch
        self.conv_in = nn.Conv2d(3 * p2, c0, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [c0]
        c_prev = c0
        for level, c in enumerate(cfg.channels):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks):
                blocks.append(_Stage(c_prev, c, emb_dim, cfg.dropout, level in cfg.attention, cfg.heads))
                c_prev = c
                skips.append(c)
            down = nn.Conv2d(c, c, 3, stride=2, padding=1) if level < len(cfg.channels) - 1 else None
            if down is not None:
                skips.append(c)
            self.down.append(nn.ModuleDict({"blocks": blocks, **({"down": down} if down is not None else {})}))
        self.mid = _Stage(c_prev, c_prev, emb_dim, cfg.dropout, True, cfg.heads, second=True)
        self.up = nn.ModuleList()
        for level in reversed(range(len(cfg.channels))):
            c = cfg.channels[level]
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks + 1):
                blocks.append(_Stage(c_prev + skips.pop(), c, emb_dim, cfg.dropout, level in cfg.attention, cfg.heads))
                c_prev = c
            upsample = nn.Conv2d(c, c, 3, padding=1) if level > 0 else None
            self.up.append(nn.ModuleDict({"blocks": blocks, **({"up": upsample} if upsample is not None else {})}))
        self.norm_out = _norm(c0)
        self.conv_out = nn.Conv2d(c0, 3 * p2, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def condition(self, cond: Conditions) -> tuple[torch.Tensor, torch.Tensor]:
        """(vector added to the time embedding, tokens) after replacing dropped conditions by null vectors."""
        text = cond.text
        if cond.keep_text is not None:
            text = torch.where(cond.keep_text[:, None], text, self.null_text.to(text.dtype)[None])
        # Unit-length embeddings have components of about 1/sqrt(d): rescale them to unit variance, so the
        # condition is as loud as the timestep from the first step instead of having to grow into it.
        text = text * self.cond_scale
        vec = self.text_vec(text)
        tokens = [self.token_in(text)[:, None] + self.token_type[0]]
        if self.cfg.neighbours:
            neigh = cond.neighbours
            if neigh is None or neigh.ndim != 3 or neigh.shape[1] < 1 or neigh.shape[2] != self.cfg.cond_dim:
                got = None if neigh is None else tuple(neigh.shape)
                raise ConfigError(f"this generator takes (batch, k >= 1, {self.cfg.cond_dim}) neighbours, got {got}")
            if cond.keep_neighbours is not None:
                null = self.null_neighbours.to(neigh.dtype)[None, None]
                neigh = torch.where(cond.keep_neighbours[:, None, None], neigh, null)
            neigh = neigh * self.cond_scale
            vec = vec + self.neigh_vec(neigh.mean(dim=1))
            tokens.append(self.token_in(neigh) + self.token_type[1])
        return vec, self.token_norm(torch.cat(tokens, dim=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """v prediction for noisy images `x` (B, 3, S, S) at times `t` (B,) in [0, 1]."""
        vec, tokens = self.condition(cond)
        emb = self.time_mlp(timestep_embedding(t, self.cfg.channels[0])) + vec
        level_tokens = {int(k): proj(tokens) for k, proj in self.token_proj.items()}
        h = self.conv_in(F.pixel_unshuffle(x, self.cfg.patch))
        skips = [h]
        for level, stage in enumerate(self.down):
            for block in stage["blocks"]:
                h = block(h, emb, level_tokens.get(level))
                skips.append(h)
            if "down" in stage:
                h = stage["down"](h)
                skips.append(h)
        h = self.mid(h, emb, level_tokens.get(self.deepest))
        for i, stage in enumerate(self.up):
            level = self.deepest - i
            for block in stage["blocks"]:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, level_tokens.get(level))
            if "up" in stage:
                h = stage["up"](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, self.cfg.patch)


class _Stage(nn.Module):
    """A residual block, followed by attention where the level has it (the middle: a second block too)."""

    def __init__(
        self, c_in: int, c_out: int, emb_dim: int, dropout: float, attention: bool, heads: int, second: bool = False
    ) -> None:
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, dropout)
        self.attn = AttentionBlock(c_out, heads) if attention else None
        self.res2 = ResBlock(c_out, c_out, emb_dim, dropout) if second else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        h = self.res(x, emb)
        if self.attn is not None:
            if tokens is None:
                raise ConfigError("an attention level needs condition tokens")
            h = self.attn(h, tokens)
        if self.res2 is not None:
            h = self.res2(h, emb)
        return h


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
