"""`train_generator` on a tiny indexed corpus: neighbours, resume equivalence, time cap, registry, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.errors import ConfigError, UnknownNameError
from mmgen.generate.image_model import load_generator
from mmgen.generate.image_neighbours import load_indexed_images
from mmgen.store.db import open_store
from mmgen.store.models import ModelRecord
from mmgen.train.generator import (
    GeneratorConfig,
    GeneratorStep,
    presets,
    train_generator,
    training_neighbours,
)
from mmgen.workspace import Workspace


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny tensors on a shared 2-core machine: one thread avoids OpenMP spin contention (10x faster here).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, shapes_manifest: Path, tiny_clip: Any) -> Workspace:
    """The 24 shapes (one text-only record and one corrupt image among them) indexed with the tiny CLIP."""
    from mmgen.indexer import IndexOptions, index_sources

    workspace = Workspace.resolve(tmp_path_factory.mktemp("gen-train") / "ws")
    index_sources(str(shapes_manifest), workspace, IndexOptions(encoder=tiny_clip.dir_name, progress=False, device="cpu"))
    return workspace


def tiny(**kw: Any) -> GeneratorConfig:
    return GeneratorConfig(**{"preset": "tiny", "steps": 6, "image_size": 16, "neighbours": 3, "device": "cpu",
                              "progress": False, **kw})  # fmt: skip


def weights(ws: Workspace, name: str) -> dict[str, Any]:
    return dict(load_generator(ws.models_dir, name).net.state_dict())


def test_training_neighbours_are_nearest_by_caption_outside_the_own_group(ws: Workspace) -> None:
    store = open_store(ws.db_url)
    try:
        indexed = load_indexed_images(ws, store, with_text=True)
    finally:
        store.close()
    assert len(indexed) == 24 and indexed.has_text.all()  # the corrupt image and the text-only record are not images
    # give two concepts one group, so that exclusion is visible beyond the item itself
    indexed.groups[1] = indexed.groups[0]
    rows = np.arange(len(indexed))
    found = training_neighbours(indexed, rows, 3)
    codes = indexed.group_codes()
    assert not np.any(codes[found] == codes[rows, None])
    assert indexed.text_vectors is not None
    for r in rows:
        scores = indexed.image_vectors @ indexed.text_vectors[r]
        scores[codes == codes[r]] = -np.inf
        assert list(found[r]) == list(np.argsort(-scores, kind="stable")[:3])


def test_interrupted_then_resumed_equals_uninterrupted(ws: Workspace) -> None:
    straight = train_generator(ws, tiny(name="straight"))
    assert straight.status == "completed" and straight.steps == 6 and straight.images == 24

    def stop_at_3(info: GeneratorStep) -> None:
        if info.step == 3:
            raise KeyboardInterrupt

    part = train_generator(ws, tiny(name="resumed"), on_step=stop_at_3)
    assert part.status == "interrupted" and part.steps == 3 and part.path is None
    assert not (ws.models_dir / "resumed" / "generator.safetensors").exists()
    done = train_generator(ws, tiny(name="resumed", resume=True))
    assert done.status == "completed" and done.resumed_from == 3 and done.steps == 6
    a, b = weights(ws, "straight"), weights(ws, "resumed")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    # another seed trains another model
    other = train_generator(ws, tiny(name="other", seed=1))
    assert other.status == "completed"
    c = weights(ws, "other")
    assert any(not np.array_equal(a[k].numpy(), c[k].numpy()) for k in a)


def test_time_cap_exports_a_usable_model_that_resumes_to_the_full_budget(ws: Workspace) -> None:
    capped = train_generator(ws, tiny(name="capped", minutes=1e-6, retrieval=False))
    assert capped.status == "time-capped" and capped.steps == 1 and capped.path is not None
    assert capped.manifest["stopped_by"] == "minutes" and capped.manifest["retrieval"] is False
    full = train_generator(ws, tiny(name="capped", retrieval=False, resume=True))
    assert full.status == "completed" and full.steps == 6 and full.manifest["planned_steps"] == 6
    with pytest.raises(ConfigError, match="another configuration"):
        train_generator(ws, tiny(name="capped", retrieval=True, resume=True))


def test_manifest_and_models_row(ws: Workspace) -> None:
    result = train_generator(ws, tiny(name="registered", steps=2))
    manifest = json.loads((ws.models_dir / "registered" / "manifest.json").read_text())
    for key in ("type", "encoder", "encoder_checksum", "dim", "code_version", "created", "checksum", "unet"):
        assert key in manifest, key
    assert manifest["type"] == "mmgen.generator" and manifest["dim"] == 16 and manifest["neighbours"] == 3
    assert manifest["unet"]["cond_dim"] == 16 and manifest["unet"]["image_size"] == 16
    store = open_store(ws.db_url)
    try:
        with store.session() as s:
            row = s.scalars(select(ModelRecord).where(ModelRecord.name == "registered")).one()
            assert row.id == result.model_id and row.kind == "generator"
            assert row.checksum == manifest["checksum"] and row.version == manifest["checksum"][:16]
            assert row.params["encoder_checksum"] == manifest["encoder_checksum"]
    finally:
        store.close()


def test_config_errors(ws: Workspace) -> None:
    with pytest.raises(ConfigError, match="folder name"):
        train_generator(ws, tiny(name="../escape"))
    with pytest.raises(ConfigError, match="neighbours"):
        train_generator(ws, tiny(neighbours=0))
    with pytest.raises(UnknownNameError, match="cpu"):
        train_generator(ws, tiny(preset="huge"))
    with pytest.raises(ConfigError, match="steps must be"):
        train_generator(ws, tiny(steps=0))
    with pytest.raises(ConfigError, match="no saved training state"):
        train_generator(ws, tiny(name="never-trained", resume=True))
    assert {"cpu", "gpu", "tiny"} <= set(presets())


def test_cli_train_generator(ws: Workspace) -> None:
    res = CliRunner().invoke(
        app,
        ["train", "generator", "--workspace", str(ws.root), "--preset", "tiny", "--steps", "2", "--image-size", "16",
         "--no-retrieval", "--device", "cpu", "--json"],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["status"] == "completed" and out["name"] == "generator-noretrieval" and out["steps"] == 2
    assert out["retrieval"] is False and Path(out["path"]).is_dir()
    res = CliRunner().invoke(app, ["train", "generator", "--workspace", str(ws.root), "--preset", "nope"])
    assert res.exit_code == 2 and "unknown generator preset" in res.stderr
