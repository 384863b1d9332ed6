"""The caption decoder: a small prefix-LM transformer with a copy head over the retrieved captions.

Sequence layout (one row per image):

    [image prefix: P tokens][retrieved captions, [SEP]-separated][BOS caption tokens]
     '------------- prefix: attends to itself both ways ---------' '-- causal, sees the prefix --'

The image embedding (the joint encoder's 384-d vector) becomes P prefix tokens through a learned
projection, and is also added (projected) to every caption token's input: a direct path that the
retrieved captions cannot crowd out of the attention; retrieved captions are WordPiece tokens whose embeddings are MiniLM's frozen table
(projected), tagged with their retrieval rank. The output distribution mixes a softmax over the
output vocabulary with a pointer distribution over the retrieved-caption tokens (pointer-generator,
See et al. 2017): p = g * p_vocab + (1 - g) * attention, so a new concept name can be composed
from words the collection already holds, even words outside the output vocabulary (extended
slots, one per distinct such token of a row's prompt). Because the prefix never attends to the
caption, its keys and values are computed once per image and cached while decoding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmgen.errors import ConfigError
from mmgen.generate.tokenizer import BOS_ID, EOS_ID, EOS_SLOT, PAD_ID, UNK_SLOT, OutputVocab

IGNORE = -100
DECODE_METHODS = ("greedy", "beam", "sample")


@dataclass(frozen=True)
class DecoderConfig:
    """Architecture of a caption decoder (saved in its manifest)."""

    image_dim: int = 384
    word_dim: int = 384
    d_model: int = 192
    layers: int = 2
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.1
    prefix_tokens: int = 4
    max_prompt: int = 64  # prompt tokens: k retrieved captions and their separators
    max_prompt_caption: int = 16  # tokens kept of each retrieved caption
    max_caption: int = 32  # generated tokens, [SEP] included
    max_ranks: int = 16
    copy: bool = True  # pointer-generator head over the prompt

    def check(self) -> None:
        """Raise ConfigError for an impossible architecture."""
        if self.d_model % self.heads:
            raise ConfigError(f"d_model {self.d_model} must be a multiple of heads {self.heads}")
        positive = ("d_model", "layers", "heads", "ff_mult", "prefix_tokens", "max_caption", "max_ranks")
        for key in (*positive, "max_prompt_caption"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1")
        if not 0 <= self.dropout < 1:
            raise ConfigError("dropout must be in [0, 1)")

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the manifest."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DecoderConfig:
        """Inverse of `to_json` (unknown keys are an error, not silently dropped)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown decoder settings: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class DecoderBatch:
    """Padded tensors for a batch of images, their prompts and (training) their captions."""

    image: torch.Tensor  # (B, image_dim) float
    prompt_ids: torch.Tensor  # (B, Lp) WordPiece ids, PAD where unused
    prompt_rank: torch.Tensor  # (B, Lp) 1..k: which retrieved caption a token belongs to; 0: padding
    prompt_pos: torch.Tensor  # (B, Lp) position inside the prompt
    prompt_copy: torch.Tensor  # (B, Lp) output slot a token copies to; -1: not copyable (separator, padding)
    ext_ids: torch.Tensor  # (B, E) WordPiece id of each extended slot V + j (PAD where unused)
    target_in: torch.Tensor | None = None  # (B, Lt) BOS + caption ids, PAD after
    target_out: torch.Tensor | None = None  # (B, Lt) caption slots + EOS slot, IGNORE after

    def to(self, device: str | torch.device) -> DecoderBatch:
        """The batch on another device."""
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return DecoderBatch(**{k: v.to(device) if v is not None else None for k, v in moved.items()})

    @property
    def prompt_valid(self) -> torch.Tensor:
        """(B, Lp) True for real prompt tokens."""
        return self.prompt_rank > 0


def make_batch(
    vocab: OutputVocab,
    images: np.ndarray,
    prompts: Sequence[Sequence[Sequence[int]]] | None,
    targets: Sequence[Sequence[int]] | None,
    cfg: DecoderConfig,
) -> DecoderBatch:
    """Tokens to tensors: prompts are per image a list of retrieved captions' ids, best first."""
    n = len(images)
    prompts = prompts if prompts is not None else [[] for _ in range(n)]
    if len(prompts) != n or (targets is not None and len(targets) != n):
        raise ConfigError("images, prompts and targets must have one entry per image")
    v = len(vocab)
    rows: list[tuple[list[int], list[int], list[int]]] = []
    exts: list[dict[int, int]] = []
    for captions in prompts:
        ids: list[int] = []
        ranks: list[int] = []
        copy: list[int] = []
        ext: dict[int, int] = {}
        for rank, caption in enumerate(captions[: cfg.max_ranks], start=1):
            for token in [*caption, EOS_ID]:
                if len(ids) >= cfg.max_prompt:
                    break
                ids.append(int(token))
                ranks.append(rank)
                if token == EOS_ID:
                    copy.append(-1)
                    continue
                slot = vocab.slot(int(token))
                if slot < 0:
                    slot = v + ext.setdefault(int(token), len(ext))
                copy.append(slot)
        rows.append((ids, ranks, copy))
        exts.append(ext)
    lp = max((len(r[0]) for r in rows), default=0)
    e = max((len(x) for x in exts), default=0)
    prompt_ids = torch.full((n, lp), PAD_ID, dtype=torch.long)
    prompt_rank = torch.zeros((n, lp), dtype=torch.long)
    prompt_copy = torch.full((n, lp), -1, dtype=torch.long)
    ext_ids = torch.full((n, e), PAD_ID, dtype=torch.long)
    for b, ((ids, ranks, copy), ext) in enumerate(zip(rows, exts)):
        prompt_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        prompt_rank[b, : len(ids)] = torch.tensor(ranks, dtype=torch.long)
        prompt_copy[b, : len(ids)] = torch.tensor(copy, dtype=torch.long)
        for token, j in ext.items():
            ext_ids[b, j] = token
    batch = DecoderBatch(
        image=torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32)),
        prompt_ids=prompt_ids,
        prompt_rank=prompt_rank,
        prompt_pos=torch.arange(lp).expand(n, lp).clone(),
        prompt_copy=prompt_copy,
        ext_ids=ext_ids,
    )
    if targets is not None:
        lt = min(cfg.max_caption, max(len(t) for t in targets) + 1) if n else 1
        target_in = torch.full((n, lt), PAD_ID, dtype=torch.long)
        target_out = torch.full((n, lt), IGNORE, dtype=torch.long)
        for b, (tokens, ext) in enumerate(zip(targets, exts)):
            tokens = [int(t) for t in tokens][: lt - 1]
            target_in[b, : len(tokens) + 1] = torch.tensor([BOS_ID, *tokens], dtype=torch.long)
            slots = []
            for t in tokens:
                slot = vocab.slot(t)
                if slot < 0:
                    slot = v + ext[t] if t in ext else IGNORE  # neither generable nor copyable: not trained on
                slots.append(slot)
            target_out[b, : len(slots) + 1] = torch.tensor([*slots, EOS_SLOT], dtype=torch.long)
        batch.target_in, batch.target_out = target_in, target_out
    return batch


class _Block(nn.Module):
    """Pre-norm transformer block whose attention can also run one cached step at a time."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, length, d = t.shape
        return t.view(b, length, self.heads, d // self.heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, L, d) -> (x, keys, values); with `cache`, x's keys and values are appended to the cached ones."""
        q, k, v = (self._heads(t) for t in self.qkv(self.ln1(x)).chunk(3, dim=-1))
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        b, _, length, _ = a.shape
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, length, -1)))
        x = x + self.drop(self.ff(self.ln2(x)))
        return x, k, v


@dataclass
class DecodeState:
    """What incremental decoding carries from step to step (one row per hypothesis)."""

    cache: list[tuple[torch.Tensor, torch.Tensor]]
    key_valid: torch.Tensor  # (N, keys so far)
    prompt_h: torch.Tensor  # (N, Lp, d) final hidden states of the prompt (for the copy head)
    prompt_copy: torch.Tensor  # (N, Lp)
    ext_ids: torch.Tensor  # (N, E)
    condition: torch.Tensor  # (N, d) the image's projection added to every caption token
    step: int = 0

    def select(self, index: torch.Tensor) -> DecodeState:
        """Keep (and reorder or repeat) rows: beam search's bookkeeping."""
        return DecodeState(
            cache=[(k.index_select(0, index), v.index_select(0, index)) for k, v in self.cache],
            key_valid=self.key_valid.index_select(0, index),
            prompt_h=self.prompt_h.index_select(0, index),
            prompt_copy=self.prompt_copy.index_select(0, index),
            ext_ids=self.ext_ids.index_select(0, index),
            condition=self.condition.index_select(0, index),
            step=self.step,
        )


class CaptionDecoder(nn.Module):
    """Image embedding + retrieved captions -> caption, as log-probabilities over output and copy slots."""

    def __init__(self, cfg: DecoderConfig, vocab: OutputVocab, word_embeddings: torch.Tensor) -> None:
        super().__init__()
        cfg.check()
        if word_embeddings.shape[1] != cfg.word_dim:
            raise ConfigError(f"word embeddings are {word_embeddings.shape[1]}-d, the config says {cfg.word_dim}")
        self.cfg = cfg
        d = cfg.d_model
        # Frozen, and not saved with the weights: MiniLM's own table, reloaded (and checksummed) from its package.
        self.register_buffer("words", word_embeddings.float(), persistent=False)
        self.register_buffer("vocab_ids", torch.as_tensor(vocab.ids, dtype=torch.long), persistent=False)
        self.word_proj = nn.Linear(cfg.word_dim, d)
        self.image_proj = nn.Linear(cfg.image_dim, d * cfg.prefix_tokens)
        self.image_pos = nn.Parameter(torch.zeros(cfg.prefix_tokens, d))
        self.image_cond = nn.Linear(cfg.image_dim, d)
        self.rank_emb = nn.Embedding(cfg.max_ranks + 1, d)
        self.prompt_pos = nn.Embedding(max(1, cfg.max_prompt), d)
        self.target_pos = nn.Embedding(cfg.max_caption, d)
        self.target_seg = nn.Parameter(torch.zeros(d))
        self.blocks = nn.ModuleList(_Block(d, cfg.heads, d * cfg.ff_mult, cfg.dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, len(vocab))
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.copy:
            self.copy_q = nn.Linear(d, d)
            self.copy_k = nn.Linear(d, d)
            self.gate = nn.Linear(2 * d, 1)
            # Start by generating (p_gen ~ 0.9): copying has to earn its weight, so a prompt of unrelated
            # captions (the usual case for an unseen concept) does not pull the caption off the image.
            nn.init.constant_(self.gate.bias, 2.0)
        for emb in (self.rank_emb, self.prompt_pos, self.target_pos):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.image_pos, std=0.02)

    @property
    def n_vocab(self) -> int:
        """Size of the output vocabulary (extended copy slots come after it)."""
        return int(self.out.out_features)

    # ---- pieces --------------------------------------------------------------------------
    def _words(self, ids: torch.Tensor) -> torch.Tensor:
        return self.word_proj(self.words[ids])

    def _prefix(self, batch: DecoderBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded prefix (image tokens, then prompt) and its validity mask."""
        b = batch.image.shape[0]
        p = self.cfg.prefix_tokens
        image = self.image_proj(batch.image).view(b, p, -1) + self.image_pos
        parts, valid = [image], [torch.ones(b, p, dtype=torch.bool, device=image.device)]
        if batch.prompt_ids.shape[1]:
            prompt = (
                self._words(batch.prompt_ids)
                + self.rank_emb(batch.prompt_rank.clamp(max=self.cfg.max_ranks))
                + self.prompt_pos(batch.prompt_pos.clamp(max=self.cfg.max_prompt - 1))
            )
            parts.append(prompt)
            valid.append(batch.prompt_valid)
        return self.drop(torch.cat(parts, dim=1)), torch.cat(valid, dim=1)

    def _target(self, ids: torch.Tensor, start: int, condition: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(start, start + ids.shape[1], device=ids.device).clamp(max=self.cfg.max_caption - 1)
        return self.drop(self._words(ids) + self.target_pos(positions) + self.target_seg + condition[:, None, :])

    def _log_probs(
        self, h: torch.Tensor, prompt_h: torch.Tensor, prompt_copy: torch.Tensor, n_ext: int
    ) -> torch.Tensor:
        """(B, T, d) decoder states -> (B, T, V + n_ext) log-probabilities (generate or copy)."""
        logits = self.out(h)
        logits[..., UNK_SLOT] = float("-inf")  # [UNK] is never a useful word to write
        if not self.cfg.copy or prompt_h.shape[1] == 0:
            logp = torch.log_softmax(logits, dim=-1)
            return F.pad(logp, (0, n_ext), value=float("-inf")) if n_ext else logp
        copyable = prompt_copy >= 0
        scores = self.copy_q(h) @ self.copy_k(prompt_h).transpose(1, 2) / math.sqrt(h.shape[-1])
        scores = scores.masked_fill(~copyable[:, None, :], -1e9)
        attention = torch.softmax(scores, dim=-1) * copyable[:, None, :]
        context = attention @ prompt_h
        gate = torch.sigmoid(self.gate(torch.cat([h, context], dim=-1)))
        gate = torch.where(copyable.any(dim=1)[:, None, None], gate, torch.ones_like(gate))
        probs = F.pad(gate * torch.softmax(logits, dim=-1), (0, n_ext))
        index = prompt_copy.clamp(min=0)[:, None, :].expand(-1, h.shape[1], -1)
        probs = probs.scatter_add(-1, index, (1 - gate) * attention)
        return torch.log(probs.clamp_min(1e-12))

    # ---- training --------------------------------------------------------------------------
    def forward(self, batch: DecoderBatch) -> torch.Tensor:
        """Mean negative log-likelihood of the batch's captions (teacher forcing)."""
        if batch.target_in is None or batch.target_out is None:
            raise ConfigError("a training batch needs targets")
        logp = self.log_probs(batch)
        return F.nll_loss(logp.flatten(0, 1), batch.target_out.flatten(), ignore_index=IGNORE)

    def log_probs(self, batch: DecoderBatch) -> torch.Tensor:
        """(B, Lt, V + E) log-probabilities of every next token of the batch's captions in one pass."""
        if batch.target_in is None:
            raise ConfigError("log_probs needs a batch with targets")
        prefix, prefix_valid = self._prefix(batch)
        target = self._target(batch.target_in, 0, self.image_cond(batch.image))
        n0, lt = prefix.shape[1], target.shape[1]
        x = torch.cat([prefix, target], dim=1)
        length = n0 + lt
        keys_valid = torch.cat([prefix_valid, batch.target_in != PAD_ID], dim=1)
        q = torch.arange(length, device=x.device)
        # Prefix rows see the prefix; caption rows see the prefix and earlier caption tokens.
        structure = (q[None, :] < n0) | ((q[:, None] >= n0) & (q[None, :] <= q[:, None]))
        mask = (structure[None] & keys_valid[:, None, :])[:, None]
        for block in self.blocks:
            x, _, _ = block(x, mask)
        h = self.norm(x)
        p = self.cfg.prefix_tokens
        return self._log_probs(h[:, n0:], h[:, p:n0], batch.prompt_copy, batch.ext_ids.shape[1])

    # ---- incremental decoding -----------------------------------------------------------------
    @torch.no_grad()
    def start(self, batch: DecoderBatch) -> DecodeState:
        """Run the prefix once and cache its keys and values."""
        x, valid = self._prefix(batch)
        mask = valid[:, None, None, :]
        cache = []
        for block in self.blocks:
            x, k, v = block(x, mask)
            cache.append((k, v))
        h = self.norm(x)
        p = self.cfg.prefix_tokens
        return DecodeState(cache, valid, h[:, p:], batch.prompt_copy, batch.ext_ids, self.image_cond(batch.image))

    @torch.no_grad()
    def step(self, state: DecodeState, token_ids: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (WordPiece ids); return (N, V + E) log-probabilities of the next one."""
        x = self._target(token_ids[:, None], state.step, state.condition)
        state.key_valid = torch.cat([state.key_valid, torch.ones_like(state.key_valid[:, :1])], dim=1)
        mask = state.key_valid[:, None, None, :]
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, mask, cache=state.cache[i])
            state.cache[i] = (k, v)
        state.step += 1
        return self._log_probs(self.norm(x), state.prompt_h, state.prompt_copy, state.ext_ids.shape[1])[:, 0]

    def slot_ids(self, slots: torch.Tensor, ext_ids: torch.Tensor) -> torch.Tensor:
        """Output slots (N,) -> WordPiece ids (extended slots through each row's `ext_ids`)."""
        v = self.n_vocab
        in_vocab = self.vocab_ids[slots.clamp(max=v - 1)]
        if ext_ids.shape[1] == 0:
            return in_vocab
        extended = ext_ids.gather(1, (slots - v).clamp(min=0, max=ext_ids.shape[1] - 1)[:, None])[:, 0]
        return torch.where(slots < v, in_vocab, extended)
