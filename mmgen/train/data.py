"""Training data: records -> decoded pixel cache + caption table + concept units, and seeded batches.

A *unit* is what one batch may hold only once: records that share a concept group or a caption
are merged into one unit, so the contrastive loss never sees a false negative inside a batch (the
same concept in two styles, two drawings titled "star"). An image identical to another concept's
(black-style skin tones, the blank rectangles of black-style flags) is dropped and counted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmgen.data.preprocess import decode_one
from mmgen.errors import ConfigError, DataError, ImageLoadError
from mmgen.train.negatives import check_hard_negatives, with_neighbourhoods

# Bump when decoding or cropping changes, so stale pixel caches are not reused.
PIXEL_CACHE_VERSION = 1
MAX_REPORTED = 20


@dataclass
class DataReport:
    """What the training set was built from and what was left out (never silently)."""

    sources: list[str] = field(default_factory=list)
    records: int = 0
    used: int = 0
    skipped_no_image: int = 0
    skipped_no_text: int = 0
    record_errors: int = 0
    corrupt_images: int = 0
    duplicate_images: int = 0  # identical pixels to another concept's image (kept once)
    skipped_icons: int = 0  # icon concepts left out by icon_weight 0
    errors: list[str] = field(default_factory=list)  # the first MAX_REPORTED messages
    units: int = 0
    merged_records: int = 0  # records that joined another concept's unit (shared caption)
    captions: int = 0
    by_corpus: dict[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        """Records not trained on, for any reason."""
        return (
            self.skipped_no_image + self.skipped_no_text + self.record_errors + self.corrupt_images
            + self.duplicate_images + self.skipped_icons
        )  # fmt: skip

    def note(self, message: str) -> None:
        """Keep one problem message (the first MAX_REPORTED; the counts hold the rest)."""
        if len(self.errors) < MAX_REPORTED:
            self.errors.append(message)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        out = dict(self.__dict__)
        out["skipped"] = self.skipped
        return out


@dataclass
class Example:
    """One usable record before decoding."""

    image: str
    captions: list[str]  # the primary caption first, then alternatives ("annotation, tags")
    group: str
    corpus: str
    weight: float = 1.0  # relative chance of being drawn (icons are down-weighted by `icon_weight`)


def is_icon_record(meta: dict[str, Any]) -> bool:
    """True for a named icon concept (Iconify icon sets; emoji-style icons joined to no code point)."""
    return isinstance(meta, dict) and meta.get("kind") == "icon"


@dataclass
class TrainingSet:
    """Decoded pixels, caption table and units, ready for seeded batch sampling."""

    pixels: np.ndarray  # uint8 (n_images, S, S, 3)
    captions: list[str]  # distinct caption strings; embeddings are cached in this order
    unit_images: list[np.ndarray]  # image rows of each unit
    unit_primary: list[np.ndarray]  # caption ids of each unit's primary captions
    unit_alternates: list[np.ndarray]  # caption ids of each unit's alternative captions (may be empty)
    report: DataReport
    fingerprint: str  # identifies pixels + captions + units (resume compatibility)
    unit_weights: list[np.ndarray] = field(default_factory=list)  # per image of each unit, parallel to unit_images

    @property
    def n_units(self) -> int:
        """Number of distinct concepts a batch can draw from."""
        return len(self.unit_images)


def collect_examples(
    sources: Iterable[str], data_dir: Path | None = None, icon_weight: float = 1.0, caption_names: bool = False
) -> tuple[list[Example], DataReport]:
    """Read the records of every SOURCE; keep those with an image and a caption, count the rest.

    Icon concepts get weight `icon_weight`; at 0 they are left out (counted in `skipped_icons`).
    `caption_names` adds a record's `meta.names` (Unicode and short names of an emoji) as alternatives.
    """
    from mmgen.data.sources import open_sources

    report = DataReport()
    examples: list[Example] = []
    for spec in sources:
        for source in open_sources(spec, data_dir):
            report.sources.append(source.corpus)
            for record in source.records():
                report.records += 1
                if record.error is not None:
                    report.record_errors += 1
                    report.note(f"{source.corpus}:{record.key}: {record.error}")
                    continue
                if not record.image:
                    report.skipped_no_image += 1
                    report.note(f"{source.corpus}:{record.key}: no image")
                    continue
                captions = _captions(record.text, record.meta, caption_names)
                if not captions:
                    report.skipped_no_text += 1
                    report.note(f"{source.corpus}:{record.key}: no text")
                    continue
                # Emoji groups are code points shared across styles; other keys are only unique per corpus.
                group = record.group if record.group is not None else f"{source.corpus}:{record.key}"
                weight = icon_weight if is_icon_record(record.meta) else 1.0
                if weight <= 0:
                    report.skipped_icons += 1
                    continue
                examples.append(Example(record.image, captions, group, source.corpus, weight))
    return examples, report


def build_training_set(
    examples: list[Example],
    report: DataReport,
    image_size: int,
    crop: str,
    cache_dir: Path | None,
    workers: int,
    progress: bool = True,
) -> TrainingSet:
    """Decode (or load cached) pixels, drop corrupt images, and merge records into units."""
    if not examples:
        raise DataError("no usable training records (every record lacked an image or a caption)")
    pixels, errors = decode_pixels([e.image for e in examples], image_size, crop, cache_dir, workers, progress)
    keep = [i for i, err in enumerate(errors) if err is None]
    for i, err in enumerate(errors):
        if err is not None:
            report.corrupt_images += 1
            report.note(f"{examples[i].corpus}: {err}")
    if not keep:
        raise DataError(f"no training image could be decoded; first error: {report.errors[:1]}")
    # An image identical to another concept's (black-style skin tones and flags render alike) teaches nothing
    # but a contradiction: keep the first, drop the rest.
    owner: dict[bytes, str] = {}
    unique = []
    for i in keep:
        digest = hashlib.sha1(pixels[i].tobytes()).digest()
        if owner.setdefault(digest, examples[i].group) != examples[i].group:
            report.duplicate_images += 1
            continue
        unique.append(i)
    pixels = pixels[unique]
    examples = [examples[i] for i in unique]
    report.used = len(examples)
    report.by_corpus = dict(Counter(e.corpus for e in examples))

    captions: dict[str, int] = {}
    for e in examples:
        for c in e.captions:
            captions.setdefault(c, len(captions))
    root = _units(examples)
    unit_of_root: dict[int, int] = {}
    unit_images: list[list[int]] = []
    unit_primary: list[set[int]] = []
    unit_alternates: list[set[int]] = []
    for i, e in enumerate(examples):
        r = root[i]
        if r not in unit_of_root:
            unit_of_root[r] = len(unit_images)
            unit_images.append([])
            unit_primary.append(set())
            unit_alternates.append(set())
        u = unit_of_root[r]
        unit_images[u].append(i)
        unit_primary[u].add(captions[e.captions[0]])
        unit_alternates[u].update(captions[c] for c in e.captions[1:])
    groups_per_unit = [len({examples[i].group for i in imgs}) for imgs in unit_images]
    report.units = len(unit_images)
    report.merged_records = sum(g - 1 for g in groups_per_unit)
    report.captions = len(captions)
    caption_list = list(captions)
    digest = hashlib.sha256(pixels.tobytes())
    digest.update(json.dumps([caption_list, unit_images], separators=(",", ":")).encode())
    if any(e.weight != 1.0 for e in examples):
        digest.update(json.dumps([e.weight for e in examples]).encode())
    return TrainingSet(
        pixels=pixels,
        captions=caption_list,
        unit_images=[np.asarray(v, dtype=np.int64) for v in unit_images],
        unit_primary=[np.asarray(sorted(v), dtype=np.int64) for v in unit_primary],
        unit_alternates=[np.asarray(sorted(v - p), dtype=np.int64) for v, p in zip(unit_alternates, unit_primary)],
        report=report,
        unit_weights=[np.asarray([examples[i].weight for i in v], dtype=np.float64) for v in unit_images],
        fingerprint=digest.hexdigest(),
    )


def decode_pixels(
    paths: list[str], image_size: int, crop: str, cache_dir: Path | None, workers: int, progress: bool = True
) -> tuple[np.ndarray, list[str | None]]:
    """Decode images to uint8 `(n, S, S, 3)` (cropped, square) with per-image errors; cached on disk by content."""
    key = _pixel_cache_key(paths, image_size, crop)
    if cache_dir is not None:
        cached = _read_pixel_cache(cache_dir, key, len(paths))
        if cached is not None:
            return cached
    pixels = np.full((len(paths), image_size, image_size, 3), 255, dtype=np.uint8)
    errors: list[str | None] = [None] * len(paths)

    def work(i: int) -> None:
        try:
            pixels[i] = decode_one(paths[i], image_size, crop)
        except ImageLoadError as exc:
            errors[i] = str(exc)

    bar = _bar(len(paths), "decoding images", progress)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(work, range(len(paths))):
            bar.update(1)
    bar.close()
    if cache_dir is not None:
        _write_pixel_cache(cache_dir, key, pixels, errors)
    return pixels, errors


SAMPLING_MODES = ("concept", "image")


def check_sampling(sampling: str) -> None:
    """Raise ConfigError unless `sampling` names a batch sampling mode."""
    if sampling not in SAMPLING_MODES:
        raise ConfigError(f"sampling must be one of {', '.join(SAMPLING_MODES)}, not {sampling!r}")


class BatchSampler:
    """Seeded, stateless batches of distinct units: step i's batch depends only on (seed, i)."""

    def __init__(
        self, data: TrainingSet, batch_size: int, seed: int, alternate_p: float, sampling: str = "concept",
        neighbours: np.ndarray | None = None, hard_negatives: float = 0.0,
    ) -> None:
        check_sampling(sampling)
        check_hard_negatives(hard_negatives)
        # Hard negatives (mmgen.train.negatives): a share of each batch is anchors' nearest concepts.
        self._neighbours = neighbours if hard_negatives > 0 else None
        self.hard_negatives = hard_negatives
        if batch_size < 2:
            raise ConfigError(f"batch_size must be at least 2 for a contrastive loss, not {batch_size}")
        if data.n_units < 2:
            raise DataError(f"training needs at least 2 distinct concepts, found {data.n_units}")
        self.batch_size = min(batch_size, data.n_units)
        self.seed = seed
        self.alternate_p = alternate_p
        self.sampling = sampling
        self.n_units = data.n_units
        self._images = _ragged(data.unit_images)
        weights = data.unit_weights or [np.ones(len(v)) for v in data.unit_images]
        self._weighted = any(bool((w != 1.0).any()) for w in weights)
        # Cumulative image weights inside each unit: an icon drawn beside emoji styles of one concept is
        # picked in proportion to its weight.
        self._cum = _ragged([np.cumsum(w) for w in weights]) if self._weighted else None
        unit_mass = np.asarray([w.sum() for w in weights], dtype=np.float64)
        # "image": a concept drawn in k styles is k times as likely to be in a batch (an epoch is a pass
        # over the images, icons counted at their weight); "concept": every concept once per epoch.
        self._p = unit_mass / unit_mass.sum() if sampling == "image" else None
        per_epoch = int(round(unit_mass.sum())) if sampling == "image" else data.n_units
        self.steps_per_epoch = max(1, per_epoch // self.batch_size)
        self._primary = _ragged(data.unit_primary)
        self._alternates = _ragged(data.unit_alternates)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unit ids, image rows, caption ids) of one step."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._p is None:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n_units)
            units = order[position * self.batch_size : (position + 1) * self.batch_size]
        else:
            draw = np.random.default_rng([self.seed, epoch, position, 2])
            units = draw.choice(self.n_units, size=self.batch_size, replace=False, p=self._p)
        if self._neighbours is not None:
            near = np.random.default_rng([self.seed, epoch, position, 3])
            units = with_neighbourhoods(units, self._neighbours, self.hard_negatives, near)
        rng = np.random.default_rng([self.seed, epoch, position, 1])
        uniform = rng.random(len(units))
        images = self._images.pick(units, uniform) if self._cum is None else self._weighted_pick(units, uniform)
        captions = self._primary.pick(units, rng.random(len(units)))
        has_alt = self._alternates.counts[units] > 0
        use_alt = has_alt & (rng.random(len(units)) < self.alternate_p)
        if use_alt.any():
            captions[use_alt] = self._alternates.pick(units[use_alt], rng.random(int(use_alt.sum())))
        return units, images, captions


    def _weighted_pick(self, units: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """One image of each unit, drawn in proportion to the image weights."""
        assert self._cum is not None
        out = np.empty(len(units), dtype=np.int64)
        for j, u in enumerate(units):
            start, n = self._cum.offsets[u], self._cum.counts[u]
            cum = self._cum.flat_f[start : start + n]
            k = min(int(np.searchsorted(cum, uniform[j] * cum[-1], side="right")), n - 1)
            out[j] = self._images.flat[self._images.offsets[u] + k]
        return out


@dataclass
class _Ragged:
    flat: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    flat_f: np.ndarray | None = None  # the float values, where the rows hold floats

    def pick(self, rows: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """One uniformly chosen element of each row."""
        idx = self.offsets[rows] + np.minimum((uniform * self.counts[rows]).astype(np.int64), self.counts[rows] - 1)
        return self.flat[idx].copy()


def _ragged(rows: list[np.ndarray]) -> _Ragged:
    counts = np.asarray([len(r) for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    flat = np.concatenate(rows) if rows and counts.sum() else np.zeros(0, dtype=np.int64)
    floats = flat.astype(np.float64) if flat.dtype.kind == "f" else None
    return _Ragged(flat.astype(np.int64), offsets, counts, floats)


def _captions(text: str | None, meta: dict[str, Any], names: bool = False) -> list[str]:
    out: list[str] = []
    primary = (text or "").strip()
    if primary:
        out.append(primary)
    if not isinstance(meta, dict):
        return out
    for key in ("captions", "names") if names else ("captions",):
        extra = meta.get(key)
        if isinstance(extra, list):
            for c in extra:
                if isinstance(c, str) and c.strip() and c.strip() not in out:
                    out.append(c.strip())
    return out


def _units(examples: list[Example]) -> list[int]:
    """Union-find root of each example over shared group and primary caption."""
    parent = list(range(len(examples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for keys in ([e.group for e in examples], [e.captions[0].casefold() for e in examples]):
        first: dict[Any, int] = {}
        for i, k in enumerate(keys):
            j = first.setdefault(k, i)
            if j != i:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(examples))]


def _pixel_cache_key(paths: list[str], image_size: int, crop: str) -> str:
    digest = hashlib.sha256(f"v{PIXEL_CACHE_VERSION}:{image_size}:{crop}\0".encode())
    for p in paths:
        try:
            st = os.stat(p)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{p}\0{stamp}\0".encode())
    return digest.hexdigest()[:24]


def _read_pixel_cache(cache_dir: Path, key: str, n: int) -> tuple[np.ndarray, list[str | None]] | None:
    pixels_path, errors_path = _cache_paths(cache_dir, key)
    if not (pixels_path.is_file() and errors_path.is_file()):
        return None
    try:
        pixels = np.load(pixels_path)
        errors = json.loads(errors_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged cache is rebuilt, not trusted
    if len(pixels) != n or len(errors) != n:
        return None
    return pixels, errors


def _write_pixel_cache(cache_dir: Path, key: str, pixels: np.ndarray, errors: list[str | None]) -> None:
    """Write the cache under temporary names unique to this writer, then rename: two trainers decoding the same
    images at once (a model and its baseline, say) each publish a whole cache, and the last rename wins."""
    import tempfile

    cache_dir.mkdir(parents=True, exist_ok=True)
    pixels_path, errors_path = _cache_paths(cache_dir, key)
    written: list[str] = []
    try:
        for final, write in ((errors_path, lambda fh: fh.write(json.dumps(errors).encode("utf-8"))),
                             (pixels_path, lambda fh: np.save(fh, pixels))):  # fmt: skip
            fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=cache_dir)
            written.append(tmp)
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, final)  # errors first: a reader checks both, and a stale pair fails the length check
    finally:
        for tmp in written:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / f"pixels-{key}.npy", cache_dir / f"pixels-{key}.errors.json"


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False, dynamic_ncols=True)
