"""Whole words only: a decoding constraint that stops the decoder from gluing WordPiece fragments together.

A pointer-generator over WordPiece tokens can copy `no` from one caption and `##hak` + `##ing`
from another and write "nohaking". The lexicon holds every word (as its WordPiece ids) of the
captions the decoder was trained on and of the captions it is prompted with; while decoding, a
`##` piece may only extend the current word towards a lexicon word, and a word may only end
(new word, punctuation or end of caption) when it is a complete lexicon word.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch


class Lexicon:
    """Words as tuples of WordPiece ids, with the prefix tree the constraint walks."""

    def __init__(self, continuation: np.ndarray) -> None:
        self.continuation = np.asarray(continuation, dtype=bool)  # per WordPiece id: is it a "##" piece?
        self.words: set[tuple[int, ...]] = set()
        self.next_pieces: dict[tuple[int, ...], set[int]] = {}

    def add(self, token_lists: Iterable[Sequence[int]]) -> Lexicon:
        """Add the words of tokenised captions; returns self."""
        for tokens in token_lists:
            for word in self.split(tokens):
                if word in self.words:
                    continue
                self.words.add(word)
                for i in range(1, len(word)):
                    self.next_pieces.setdefault(word[:i], set()).add(word[i])
        return self

    def split(self, tokens: Sequence[int]) -> list[tuple[int, ...]]:
        """Token ids -> words (a word is a non-`##` token and the `##` pieces after it)."""
        words: list[list[int]] = []
        for t in tokens:
            t = int(t)
            if self.continuation[t] and words:
                words[-1].append(t)
            else:
                words.append([t])
        return [tuple(w) for w in words]

    def single_tokens(self) -> set[int]:
        """Ids that are a whole word on their own."""
        return {w[0] for w in self.words if len(w) == 1}

    def copy(self) -> Lexicon:
        """An independent copy (a batch adds its prompts' words without touching the model's lexicon)."""
        out = Lexicon(self.continuation)
        out.words = set(self.words)
        out.next_pieces = {k: set(v) for k, v in self.next_pieces.items()}
        return out

    def to_json(self) -> list[list[int]]:
        """The words, sorted, as lists of ids."""
        return [list(w) for w in sorted(self.words)]

    @classmethod
    def from_json(cls, words: list[list[int]], continuation: np.ndarray) -> Lexicon:
        """Inverse of `to_json`."""
        return cls(continuation).add(words) if words else cls(continuation)


def ban_non_words(
    logp: torch.Tensor,
    history: list[list[int]],
    lexicon: Lexicon,
    slot_ids: torch.Tensor,
    end_slot: int,
    last: bool = False,
) -> None:
    """Set to -inf, in place, the next slots that would leave a row's current word outside the lexicon.

    `history` holds each row's WordPiece ids so far; `slot_ids` (rows, slots) the WordPiece id of
    every output slot of each row (extended copy slots differ per row). On the `last` step of a
    length-limited caption, only tokens that leave a complete word are allowed.
    """
    cont = torch.as_tensor(lexicon.continuation, device=logp.device)[slot_ids]  # (rows, slots) "##" pieces
    for r, ids in enumerate(history):
        end = logp[r, end_slot].clone()
        _ban_row(logp, r, ids, lexicon, cont, slot_ids, end_slot, last)
        if not torch.isfinite(logp[r]).any():  # no lexicon word can be finished here: end the caption
            logp[r, end_slot] = end


def complete_words(ids: Sequence[int], lexicon: Lexicon) -> list[int]:
    """`ids` without a trailing unfinished word (a caption cut by its length limit)."""
    words = lexicon.split(ids)
    while words and words[-1] not in lexicon.words:
        words.pop()
    return [t for w in words for t in w]


def _ban_row(
    logp: torch.Tensor,
    r: int,
    ids: list[int],
    lexicon: Lexicon,
    cont: torch.Tensor,
    slot_ids: torch.Tensor,
    end_slot: int,
    last: bool,
) -> None:
    """One row of `ban_non_words`."""
    word: list[int] = []
    for t in reversed(ids):  # the current word: the last non-"##" token and the pieces after it
        word.insert(0, t)
        if not lexicon.continuation[t]:
            break
    key = tuple(word)
    pieces = lexicon.next_pieces.get(key, set()) if word else set()  # a caption cannot start inside a word
    if last:  # the next token is the last one: it must leave a complete word
        pieces = {c for c in pieces if (*key, c) in lexicon.words}
    logp[r, cont[r] & ~_isin(slot_ids[r], pieces)] = float("-inf")
    if word and key not in lexicon.words:  # an unfinished word must go on
        logp[r, ~cont[r]] = float("-inf")
        logp[r, end_slot] = float("-inf")
    elif last:  # a new word must be a one-token word (ending the caption stays allowed)
        end = logp[r, end_slot].clone()
        logp[r, ~cont[r] & ~_isin(slot_ids[r], lexicon.single_tokens())] = float("-inf")
        logp[r, end_slot] = end


def _isin(ids: torch.Tensor, allowed: set[int]) -> torch.Tensor:
    if not allowed:
        return torch.zeros_like(ids, dtype=torch.bool)
    return torch.isin(ids, torch.tensor(sorted(allowed), device=ids.device))
