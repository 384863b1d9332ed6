"""Seeded batch sampling over concept units."""

from __future__ import annotations

import numpy as np
import pytest

from mmgen.errors import ConfigError
from mmgen.train.data import BatchSampler, DataReport, TrainingSet


def units_set(image_counts: list[int]) -> TrainingSet:
    """A pixel-free training set whose unit i holds image_counts[i] images and one caption."""
    rows, start = [], 0
    for n in image_counts:
        rows.append(np.arange(start, start + n, dtype=np.int64))
        start += n
    n_units = len(image_counts)
    return TrainingSet(
        pixels=np.zeros((start, 1, 1, 3), np.uint8),
        captions=[f"c{i}" for i in range(n_units)],
        unit_images=rows,
        unit_primary=[np.asarray([i], np.int64) for i in range(n_units)],
        unit_alternates=[np.zeros(0, np.int64) for _ in range(n_units)],
        report=DataReport(),
        fingerprint="test",
    )


@pytest.mark.parametrize("sampling", ["concept", "image"])
def test_batches_hold_distinct_units_and_are_seeded(sampling: str) -> None:
    data = units_set([1, 3] * 20)
    sampler = BatchSampler(data, 8, seed=3, alternate_p=0.0, sampling=sampling)
    for step in range(12):
        units, images, captions = sampler.batch(step)
        assert len(set(units.tolist())) == len(units) == 8
        assert all(img in data.unit_images[u] for u, img in zip(units, images))
        np.testing.assert_array_equal(captions, units)  # caption i belongs to unit i
        again = BatchSampler(data, 8, seed=3, alternate_p=0.0, sampling=sampling).batch(step)
        np.testing.assert_array_equal(again[0], units)
        np.testing.assert_array_equal(again[1], images)


def test_concept_sampling_visits_every_unit_once_per_epoch() -> None:
    data = units_set([1, 3] * 20)
    sampler = BatchSampler(data, 8, seed=0, alternate_p=0.0)
    seen = np.concatenate([sampler.batch(s)[0] for s in range(sampler.steps_per_epoch)])
    assert sorted(seen.tolist()) == list(range(40))


def test_image_sampling_weights_units_by_their_images() -> None:
    """Units with 3 styles are drawn about 3x as often as single-image units (batch 4 of 100 keeps it near-linear)."""
    data = units_set([1, 3] * 50)
    sampler = BatchSampler(data, 4, seed=0, alternate_p=0.0, sampling="image")
    assert sampler.steps_per_epoch == 200 // 4  # an epoch is a pass over the 200 images
    counts = np.bincount(np.concatenate([sampler.batch(s)[0] for s in range(2000)]), minlength=100)
    ratio = counts[1::2].sum() / counts[0::2].sum()
    assert 2.7 < ratio < 3.3


def test_unknown_sampling_mode() -> None:
    with pytest.raises(ConfigError, match="sampling must be one of concept, image"):
        BatchSampler(units_set([1, 1]), 2, seed=0, alternate_p=0.0, sampling="styles")


def test_image_weights_scale_units_and_picks_inside_a_unit() -> None:
    """Icons at weight 0.25: a one-icon unit is drawn a quarter as often, and inside a mixed unit so is the icon."""
    data = units_set([1, 1, 2] * 40)
    weights = []
    for i, rows in enumerate(data.unit_images):
        kind = i % 3
        weights.append(np.asarray([1.0] if kind == 0 else [0.25] if kind == 1 else [1.0, 0.25]))
    data.unit_weights = weights
    sampler = BatchSampler(data, 4, seed=0, alternate_p=0.0, sampling="image")
    draws = [sampler.batch(s) for s in range(3000)]
    counts = np.bincount(np.concatenate([d[0] for d in draws]), minlength=120)
    assert 0.2 < counts[1::3].sum() / counts[0::3].sum() < 0.3
    mixed = np.concatenate([d[1][d[0] % 3 == 2] for d in draws])
    second = np.isin(mixed, [rows[1] for rows in data.unit_images[2::3]]).mean()
    assert 0.15 < second < 0.25  # 0.25 / 1.25 of the mixed units' picks are the icon


def test_concurrent_writers_of_one_pixel_cache_each_publish_a_whole_cache(tmp_path) -> None:
    """Two trainers on one workspace (a generator and its baseline) decode the same images and write one cache key.

    With one shared temporary name, a writer's rename found its file already renamed by the other
    (FileNotFoundError, 19 of 60 writes here before the fix); now each writer has its own.
    """
    import threading

    from mmgen.train.data import _read_pixel_cache, _write_pixel_cache

    pixels = np.arange(2000 * 3 * 8 * 8, dtype=np.uint32).astype(np.uint8).reshape(2000, 3, 8, 8)
    errors = [None] * 1999 + ["broken.png: not an image"]
    failures: list[BaseException] = []

    def write() -> None:
        for _ in range(15):
            try:
                _write_pixel_cache(tmp_path, "k", pixels, errors)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                failures.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixels-k.errors.json", "pixels-k.npy"]  # no temporary left
    got = _read_pixel_cache(tmp_path, "k", len(pixels))
    assert got is not None and np.array_equal(got[0], pixels) and got[1] == errors
