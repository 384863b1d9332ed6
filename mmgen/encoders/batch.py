"""One batch of records through an encoder: decode its images, embed its images and texts.

The local indexer and the Ray engine's workers both call `embed_batch`, so the two engines turn
the same records into the same vectors and the same per-record failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mmgen.errors import ImageLoadError

if TYPE_CHECKING:
    from PIL import Image

    from mmgen.encoders.base import Encoder

TEXT_CACHE_MAX = 200_000
# Texts of this many records are embedded together before their batches (`prefill_texts`): sorted by
# length over a wide window, a batch pads little, where a 128-record batch pads to its longest caption.
TEXT_WINDOW = 2048


@dataclass
class Embedded:
    """One batch's vectors: modality -> (positions in the batch, float32 rows), with failures and stage times."""

    rows: dict[str, tuple[list[int], np.ndarray]] = field(default_factory=dict)
    failures: list[tuple[int, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def embed_batch(
    encoder: Encoder,
    embed: list[list[str]],
    texts: Sequence[str | None],
    images: Sequence[Callable[[], Image.Image] | None],
    text_cache: dict[str, np.ndarray],
) -> Embedded:
    """Decode (`images[j]()`) and encode one batch; a record whose image fails loses "image" from `embed[j]`."""
    out = Embedded()
    started = time.perf_counter()
    decoded: list[Image.Image] = []
    image_owner: list[int] = []
    for j, load in enumerate(images):
        if load is None:
            continue
        try:
            decoded.append(load())
            image_owner.append(j)
        except ImageLoadError as exc:
            out.failures.append((j, f"image: {exc}"))
            embed[j].remove("image")
    out.timings["decode"] = time.perf_counter() - started
    started = time.perf_counter()
    if decoded:
        out.rows["image"] = (image_owner, encoder.encode_image(decoded))
    text_owner = [j for j, mods in enumerate(embed) if "text" in mods]
    if text_owner:
        out.rows["text"] = (text_owner, _encode_texts(encoder, [texts[j] or "" for j in text_owner], text_cache))
    out.timings["encode"] = time.perf_counter() - started
    return out


def prefill_texts(encoder: Encoder, texts: Sequence[str | None], cache: dict[str, np.ndarray]) -> float:
    """Embed the texts not yet in `cache` in one call (one length sort) and return the seconds it took.

    The batches that follow find their texts in the cache: the vectors are the same, the padding less."""
    started = time.perf_counter()
    _fill(encoder, [t or "" for t in texts], cache)
    return time.perf_counter() - started


def _fill(encoder: Encoder, texts: list[str], cache: dict[str, np.ndarray]) -> None:
    # Styles of one concept share a caption: embed each distinct text once per run.
    missing = list(dict.fromkeys(t for t in texts if t not in cache))
    if len(missing) > TEXT_CACHE_MAX - len(cache):  # full: start over, with every text of this call to embed
        cache.clear()
        missing = list(dict.fromkeys(texts))
    if missing:
        cache.update(zip(missing, encoder.encode_text(missing)))


def _encode_texts(encoder: Encoder, texts: list[str], cache: dict[str, np.ndarray]) -> np.ndarray:
    _fill(encoder, texts, cache)
    return np.stack([cache[t] for t in texts]).astype(np.float32)
