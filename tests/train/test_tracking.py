"""`mmgen train ... --mlflow`: a training run logged to a real local MLflow store, read back with MLflow's client."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmgen.errors import ConfigError, MissingDependencyError
from mmgen.tracking import artifact_files, check_available, resolve_target, split_manifest

pytest.importorskip("mlflow")

runner = CliRunner()


def invoke(*args: str):  # noqa: ANN201 - click's Result
    from mmgen.cli import app

    return runner.invoke(app, list(args), catch_exceptions=False)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_hasher_logs_params_curve_metrics_and_weights(tmp_path, tiny_encoder, build_tiny_workspace) -> None:
    from mlflow.tracking import MlflowClient

    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder)
    store = tmp_path / "mlruns"
    runs = []
    for seed in ("0", "1"):  # the second run is version 2 of the same name
        res = invoke("train", "hasher", "--workspace", str(ws.root), "--bits", "32", "--steps", "30", "--seed", seed,
                     "--quiet", "--json", "--mlflow", str(store))  # fmt: skip
        assert res.exit_code == 0, res.output
        runs.append(json.loads(res.stdout))
    first, second = (r["mlflow"] for r in runs)
    assert first["tracking_uri"] == f"sqlite:///{store.resolve() / 'mlflow.db'}" and first["experiment"] == "mmgen-hasher"
    client = MlflowClient(tracking_uri=first["tracking_uri"])
    run = client.get_run(second["run_id"])
    manifest = json.loads((ws.models_dir / "default-32b" / "manifest.json").read_text())
    assert run.info.status == "FINISHED" and run.info.run_name == "default-32b@2"
    assert run.data.tags["mmgen.kind"] == "hasher" and run.data.tags["mmgen.version"] == "2"
    assert run.data.tags["mmgen.checksum"] == manifest["checksum"]
    assert run.data.params["bits"] == "32" and run.data.params["encoder"] == manifest["encoder"]
    assert run.data.metrics["final_loss"] == pytest.approx(manifest["final_loss"])
    curve = client.get_metric_history(run.info.run_id, "loss")
    points = sorted((m.step, m.value) for m in curve)
    assert [p[0] for p in points] == [p[0] for p in manifest["loss_curve"]]
    assert [p[1] for p in points] == pytest.approx([p[1] for p in manifest["loss_curve"]])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert logged == {"model/manifest.json", "model/hasher.pt"}
    local = Path(client.download_artifacts(run.info.run_id, "model/hasher.pt", str(tmp_path / "dl")))
    assert sha(local) == sha(ws.models_dir / "default-32b" / "hasher.pt")
    # version 1's run keeps version 1's weights: its checksum is the kept version's
    old = client.get_run(first["run_id"])
    assert old.info.run_name == "default-32b@1"
    kept = json.loads((ws.models_dir / "default-32b" / "versions" / "1" / "manifest.json").read_text())
    assert old.data.tags["mmgen.checksum"] == kept["checksum"] != manifest["checksum"]


def test_train_encoder_logs_its_config_and_curve(tmp_path, shapes_manifest, tiny_tower) -> None:
    from mlflow.tracking import MlflowClient

    ws = tmp_path / "ws"
    res = invoke("train", "encoder", str(shapes_manifest), "--name", "shapes", "--workspace", str(ws), "--tower",
                 str(tiny_tower), "--image-size", "32", "--batch-size", "8", "--steps", "12", "--quiet",
                 "--mlflow", str(tmp_path / "mlruns"))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "logged to MLflow: experiment mmgen-encoder, run " in res.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / 'mlruns').resolve() / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mmgen-encoder").experiment_id])
    assert run.data.params["config.steps"] == "12" and run.data.params["config.batch_size"] == "8"
    assert run.data.metrics["steps"] == 12
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= 1
    names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")}
    assert "manifest.json" in names and "open_clip_model.safetensors" in names
    assert "train-state.pt" not in names and "text-cache" not in names


def test_bad_targets_fail_before_training(tmp_path) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        resolve_target(str(a_file))
    with pytest.raises(ConfigError, match="needs a folder"):
        resolve_target(" ")
    assert resolve_target("http://mlflow.example:5000") == ("http://mlflow.example:5000", None)
    res = invoke("train", "hasher", "--workspace", str(tmp_path / "ws"), "--mlflow", str(a_file))
    assert res.exit_code == 2 and "is a file" in res.output


def test_a_missing_mlflow_fails_with_the_install_hint(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(MissingDependencyError, match=r"mmgen\[mlflow\]"):
        check_available(str(tmp_path / "mlruns"))


def test_manifest_split_and_artifact_selection(tmp_path) -> None:
    params, metrics = split_manifest({
        "name": "m", "type": "mmgen.hasher", "config": {"lr": 0.001, "steps": 30, "tags": ["a"]}, "final_loss": 0.5,
        "locked": True, "loss_curve": [[1, 2.0]], "holdout": {"groups": [1, 2], "fraction": 0.1}, "long": "x" * 900,
    })  # fmt: skip
    assert params == {"name": "m", "config.lr": "0.001", "config.steps": "30", "config.tags": '["a"]', "locked": "true",
                      "final_loss": "0.5", "holdout.fraction": "0.1",
                      "long": params["long"]}  # fmt: skip
    assert params["long"].endswith("…(cut)") and len(params["long"]) <= 500
    assert metrics == {"final_loss": 0.5, "holdout.fraction": 0.1}
    for rel in ("manifest.json", "w.bin", "sub/x.json", "versions/1/manifest.json", "train-state.pt", "text-cache/a"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("1")
    assert [p.relative_to(tmp_path).as_posix() for p in artifact_files(tmp_path)] == [
        "manifest.json", "sub/x.json", "w.bin"]  # fmt: skip
