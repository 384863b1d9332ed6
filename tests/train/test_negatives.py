"""Hard negatives: batches built partly from neighbourhoods of nearby concepts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmgen.errors import ConfigError
from mmgen.train.data import BatchSampler
from mmgen.train.negatives import GROUP, concept_neighbours, with_neighbourhoods
from tests.train.test_data import units_set


def clustered_vectors(n_clusters: int, per: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    """Unit vectors in tight clusters: unit i belongs to cluster i // per."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    v = np.repeat(centres, per, axis=0) + 0.01 * rng.normal(size=(n_clusters * per, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_neighbours_are_the_nearest_other_units() -> None:
    vectors = clustered_vectors(10, 5)
    nn = concept_neighbours(vectors, pool=4)
    assert nn.shape == (50, 4)
    for i in range(50):
        assert i not in nn[i]
        assert set((nn[i] // 5).tolist()) == {i // 5}  # the 4 others of its own cluster


def test_neighbourhoods_keep_size_distinct_and_add_near_concepts() -> None:
    vectors = clustered_vectors(50, 5)
    nn = concept_neighbours(vectors, pool=4)
    units = np.random.default_rng(1).permutation(250)[:32]
    out = with_neighbourhoods(units, nn, 0.5, np.random.default_rng(2))
    assert len(out) == 32 and len(set(out.tolist())) == 32
    n_anchor = int(round(0.5 * 32 * (GROUP - 1) / GROUP)) // (GROUP - 1)
    for anchor in units[:n_anchor]:
        assert sum(int(u) // 5 == anchor // 5 for u in out) >= GROUP  # anchor + GROUP-1 of its cluster
    np.testing.assert_array_equal(with_neighbourhoods(units, nn, 0.0, np.random.default_rng(2)), units)


@pytest.mark.parametrize("sampling", ["concept", "image"])
def test_sampler_with_hard_negatives_is_seeded_and_distinct(sampling: str) -> None:
    data = units_set([1, 2] * 300)
    nn = concept_neighbours(clustered_vectors(150, 4), pool=3)
    plain = BatchSampler(data, 16, seed=5, alternate_p=0.0, sampling=sampling)
    hard = BatchSampler(data, 16, seed=5, alternate_p=0.0, sampling=sampling, neighbours=nn, hard_negatives=0.5)
    same_cluster_plain = same_cluster_hard = 0
    for step in range(20):
        units, images, _ = hard.batch(step)
        assert len(set(units.tolist())) == len(units) == 16
        assert all(img in data.unit_images[u] for u, img in zip(units, images))
        np.testing.assert_array_equal(
            units, BatchSampler(data, 16, 5, 0.0, sampling, neighbours=nn, hard_negatives=0.5).batch(step)[0]
        )
        same_cluster_hard += 16 - len(set((units // 4).tolist()))
        same_cluster_plain += 16 - len(set((plain.batch(step)[0] // 4).tolist()))
    assert same_cluster_hard > 3 * max(same_cluster_plain, 1)


def test_hard_negative_share_is_checked() -> None:
    with pytest.raises(ConfigError, match="hard_negatives"):
        BatchSampler(units_set([1, 1, 1]), 2, seed=0, alternate_p=0.0, hard_negatives=1.0)


def test_training_with_hard_negatives_runs_and_is_recorded(
    tmp_path: Path, shapes_manifest: Path, tiny_tower: Path
) -> None:
    from mmgen.train.encoder import train_encoder
    from mmgen.workspace import Workspace
    from tests.train.test_encoder import tiny_config

    ws = Workspace.resolve(tmp_path / "ws")
    result = train_encoder([str(shapes_manifest)], ws, tiny_config("hard", tiny_tower, steps=3, hard_negatives=0.5))
    assert result.status == "completed" and result.steps == 3
    manifest = json.loads((ws.models_dir / "hard" / "manifest.json").read_text())
    assert manifest["config"]["hard_negatives"] == 0.5
