"""Decoding captions from a `CaptionDecoder`: greedy, beam search and sampling, with whole-word
constraints (a lexicon of the training captions' words) and n-gram repeat bans."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmgen.errors import ConfigError
from mmgen.generate.caption_words import Lexicon, ban_non_words, complete_words
from mmgen.generate.decoder import DECODE_METHODS, CaptionDecoder, DecoderBatch
from mmgen.generate.tokenizer import BOS_ID, EOS_SLOT


@dataclass(frozen=True)
class DecodeOptions:
    """How to turn log-probabilities into a caption."""

    method: str = "beam"
    beams: int = 3
    temperature: float = 1.0
    length_penalty: float = 1.0  # beam: final scores are sum log p / length ** length_penalty
    no_repeat_ngram: int = 3  # never write an n-gram twice (stops "moon, moon, moon" loops); 0: off
    max_tokens: int | None = None  # default: the decoder's max_caption

    def check(self) -> None:
        """Raise ConfigError for invalid settings."""
        if self.method not in DECODE_METHODS:
            raise ConfigError(f"decode must be one of {', '.join(DECODE_METHODS)}, not {self.method!r}")
        if self.beams < 1:
            raise ConfigError("beams must be at least 1")
        if not self.temperature > 0:
            raise ConfigError("temperature must be positive")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError("max_tokens must be at least 1")
        if self.no_repeat_ngram < 0:
            raise ConfigError("no_repeat_ngram must be >= 0")


@torch.no_grad()
def generate(
    model: CaptionDecoder,
    batch: DecoderBatch,
    opts: DecodeOptions,
    generator: torch.Generator | None = None,
    lexicon: Lexicon | None = None,
) -> list[list[int]]:
    """WordPiece ids of one caption per image (without special tokens); with a lexicon, whole words only."""
    return [candidates[0] for candidates in generate_candidates(model, batch, opts, generator, lexicon)]


@torch.no_grad()
def generate_candidates(
    model: CaptionDecoder,
    batch: DecoderBatch,
    opts: DecodeOptions,
    generator: torch.Generator | None = None,
    lexicon: Lexicon | None = None,
) -> list[list[list[int]]]:
    """Per image, distinct captions as WordPiece ids, best first: the final beam, or one greedy/sampled caption."""
    opts.check()
    model.eval()
    limit = min(opts.max_tokens or model.cfg.max_caption, model.cfg.max_caption)
    if opts.method == "beam" and opts.beams > 1:
        slots, ext = _beam(model, batch, opts, limit, lexicon)
    else:
        slots, ext = _sequential(model, batch, opts, limit, generator, lexicon)
    out = []
    for rows, row_ext in zip(slots, ext):
        candidates: list[list[int]] = []
        for row in rows:
            ids = model.slot_ids(row, row_ext.expand(len(row), -1)).tolist()
            kept = []
            for slot, token in zip(row.tolist(), ids):
                if slot == EOS_SLOT:
                    break
                kept.append(int(token))
            kept = complete_words(kept, lexicon) if lexicon is not None else kept
            if kept not in candidates:
                candidates.append(kept)
        out.append(candidates)
    return out


def _sequential(
    model: CaptionDecoder,
    batch: DecoderBatch,
    opts: DecodeOptions,
    limit: int,
    generator: torch.Generator | None = None,
    lexicon: Lexicon | None = None,
) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    state = model.start(batch)
    n = batch.image.shape[0]
    tokens = torch.full((n,), BOS_ID, dtype=torch.long, device=batch.image.device)
    finished = torch.zeros(n, dtype=torch.bool, device=tokens.device)
    history: list[torch.Tensor] = []
    written: list[list[int]] = [[] for _ in range(n)]  # WordPiece ids so far, per row
    all_ids = _all_slot_ids(model, state.ext_ids) if lexicon is not None else None
    for t in range(limit):
        logp = model.step(state, tokens)
        if lexicon is not None and all_ids is not None:
            ban_non_words(logp, written, lexicon, all_ids, EOS_SLOT, last=t == limit - 1)
        if history:
            _ban_repeats(logp, torch.stack(history, dim=1), opts.no_repeat_ngram)
        if opts.method == "sample":
            probs = torch.softmax(logp / opts.temperature, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(tokens.device)
        else:
            nxt = logp.argmax(dim=-1)
        nxt = torch.where(finished, torch.full_like(nxt, EOS_SLOT), nxt)
        history.append(nxt)
        finished |= nxt == EOS_SLOT
        if bool(finished.all()):
            break
        tokens = model.slot_ids(nxt, state.ext_ids)
        for row, token in zip(written, tokens.tolist()):
            row.append(token)
    slots = torch.stack(history, dim=1)
    return [[row] for row in slots], [e[None] for e in batch.ext_ids]


def _beam(
    model: CaptionDecoder, batch: DecoderBatch, opts: DecodeOptions, limit: int, lexicon: Lexicon | None = None
) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    n, nb = batch.image.shape[0], opts.beams
    device = batch.image.device
    rows = torch.arange(n, device=device).repeat_interleave(nb)
    state = model.start(batch).select(rows)
    scores = torch.zeros(n, nb, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    tokens = torch.full((n * nb,), BOS_ID, dtype=torch.long, device=device)
    finished = torch.zeros(n * nb, dtype=torch.bool, device=device)
    lengths = torch.zeros(n * nb, device=device)
    history = torch.zeros(n * nb, 0, dtype=torch.long, device=device)
    written = torch.zeros(n * nb, 0, dtype=torch.long, device=device)  # WordPiece ids so far
    all_ids = _all_slot_ids(model, state.ext_ids) if lexicon is not None else None
    for t in range(limit):
        logp = model.step(state, tokens)
        if lexicon is not None and all_ids is not None:
            ban_non_words(logp, written.tolist(), lexicon, all_ids, EOS_SLOT, last=t == limit - 1)
        _ban_repeats(logp, history, opts.no_repeat_ngram)
        width = logp.shape[1]
        # A finished hypothesis stays in the beam unchanged: its only continuation is [SEP] at no cost.
        done_row = torch.full((width,), float("-inf"), device=device)
        done_row[EOS_SLOT] = 0.0
        logp = torch.where(finished[:, None], done_row, logp)
        top, index = (scores.view(-1, 1) + logp).view(n, nb * width).topk(nb, dim=1)
        source = (torch.arange(n, device=device)[:, None] * nb + index // width).flatten()
        slots = (index % width).flatten()
        state = state.select(source)
        history = torch.cat([history[source], slots[:, None]], dim=1)
        lengths = lengths[source] + (~finished[source]).float()
        finished = finished[source] | (slots == EOS_SLOT)
        scores = top
        if bool(finished.all()):
            break
        tokens = model.slot_ids(slots, state.ext_ids)
        written = torch.cat([written[source], tokens[:, None]], dim=1)
    normed = (scores.flatten() / lengths.clamp(min=1) ** opts.length_penalty).view(n, nb)
    order = normed.argsort(dim=1, descending=True).tolist()
    finals = [
        [history[i * nb + j] for j in order[i] if bool(torch.isfinite(normed[i, j]))] or [history[i * nb]]
        for i in range(n)
    ]
    return finals, [e[None] for e in batch.ext_ids]


def _ban_repeats(logp: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """Set to -inf, in place, every next slot that would repeat an n-gram already in its row's history.

    A soft rule: a row it would leave with no finite choice (the lexicon demands the repeat) is left alone.
    """
    if n < 1 or history.shape[1] < n - 1:
        return
    for r, seq in enumerate(history.tolist()):
        tail = seq[len(seq) - (n - 1) :] if n > 1 else []
        banned = [seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i : i + n - 1] == tail]
        if banned:
            row = logp[r].clone()
            row[banned] = float("-inf")
            if torch.isfinite(row).any():
                logp[r] = row


def _all_slot_ids(model: CaptionDecoder, ext_ids: torch.Tensor) -> torch.Tensor:
    """(rows, V + E): the WordPiece id behind every output slot of every row."""
    n = ext_ids.shape[0]
    return torch.cat([model.vocab_ids.expand(n, -1), ext_ids], dim=1)
