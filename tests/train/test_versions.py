"""Model versions: a retrain under the same name keeps the old version (NAME@N), indexes made with it
still search, `mmgen models` lists both, and `mmgen models rm` refuses while something depends on one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.encoders import clear_encoder_cache, load_encoder
from mmgen.errors import ConfigError, ModelLoadError
from mmgen.versions import split_version, version_folder

runner = CliRunner()


def invoke(*args: str, ok: bool = True):  # noqa: ANN201 - click's Result
    res = runner.invoke(app, list(args))
    if ok:
        assert res.exit_code == 0, res.output
    return res


def train(ws: Path, manifest: Path, tower: Path, seed: int) -> None:
    invoke(
        "train", "encoder", str(manifest), "--name", "enc", "--workspace", str(ws), "--tower", str(tower),
        "--image-size", "32", "--batch-size", "8", "--steps", "3", "--seed", str(seed), "--resume", "never", "--quiet",
    )  # fmt: skip
    clear_encoder_cache()


def test_split_version() -> None:
    assert split_version("enc") == ("enc", None)
    assert split_version("enc@2") == ("enc", 2)
    for bad in ("enc@", "enc@0", "enc@x", "a@1@2"):
        with pytest.raises(ConfigError, match="NAME@N"):
            split_version(bad)


def test_retrain_keeps_the_old_version(tmp_path: Path, shapes_manifest: Path, tiny_tower: Path) -> None:
    ws = tmp_path / "ws"
    models = ws / "models"
    train(ws, shapes_manifest, tiny_tower, seed=0)
    first = load_encoder("mmgen:enc", models_dir=models).checksum()
    invoke("index", str(shapes_manifest), "--workspace", str(ws), "--encoder", "mmgen:enc", "--quiet")

    train(ws, shapes_manifest, tiny_tower, seed=1)  # other weights: version 2
    second = load_encoder("mmgen:enc", models_dir=models).checksum()
    assert second != first
    assert version_folder(models, "enc@1") == models / "enc" / "versions" / "1"
    assert load_encoder("mmgen:enc@1", models_dir=models).checksum() == first
    assert version_folder(models, "enc@2") == models / "enc"
    with pytest.raises(ModelLoadError, match=r"no version 3 \(versions: enc@1, enc@2\)"):
        version_folder(models, "enc@3")
    assert (models / "enc" / "train-state.pt").is_file()  # the resumable state stays with the newest

    # The index built with version 1 still searches: its encoder is found by checksum.
    res = invoke("search", "a red circle", "--workspace", str(ws), "-k", "3", "--json")
    found = json.loads(res.output)
    assert found["hits"]

    listed = json.loads(invoke("models", "--workspace", str(ws), "--json", "--kind", "encoder").output)
    by_version = {m["version"]: m for m in listed}
    assert set(by_version) == {1, 2}
    assert by_version[1]["checksum"] == first and by_version[1]["present"]
    assert by_version[1]["indexes"] == ["default"] and by_version[2]["indexes"] == []
    assert by_version[2]["steps"] == 3 and by_version[2]["config"]["seed"] == 1
    text = invoke("models", "--workspace", str(ws)).output
    assert "enc@1" in text and "enc@2" in text and "indexes default" in text

    refused = invoke("models", "rm", "enc@1", "--workspace", str(ws), ok=False)
    assert refused.exit_code != 0 and "index(es) default" in refused.output and "--force" in refused.output
    newest = invoke("models", "rm", "enc@2", "--workspace", str(ws), "--force", ok=False)
    assert newest.exit_code != 0 and "newest version" in newest.output
    invoke("models", "rm", "enc@1", "--workspace", str(ws), "--force")
    assert not (models / "enc" / "versions" / "1" / "manifest.json").exists()
    with pytest.raises(ModelLoadError, match="version 1 of model .enc. was removed"):
        version_folder(models, "enc@1")
    assert [m["version"] for m in json.loads(invoke("models", "--workspace", str(ws), "--json").output)] == [2]


def test_same_weights_again_are_the_same_version(tmp_path: Path, shapes_manifest: Path, tiny_tower: Path) -> None:
    ws = tmp_path / "ws"
    train(ws, shapes_manifest, tiny_tower, seed=0)
    train(ws, shapes_manifest, tiny_tower, seed=0)  # deterministic on CPU: identical weights
    assert not (ws / "models" / "enc" / "versions" / "1").exists()
    listed = json.loads(invoke("models", "--workspace", str(ws), "--json").output)
    assert [(m["name"], m["version"]) for m in listed] == [("enc", 1)]
