"""Optional MLflow tracking of training runs: `mmgen train KIND ... --mlflow DIR|URI`.

Off by default; MLflow is an optional extra (`pip install 'mmgen[mlflow]'`, the `mlflow-skinny`
client). After a trainer has saved and registered its model, `log_training` records one MLflow run
with MLflow's own client:
- parameters: every scalar of the model's manifest, flattened (`config.lr`, `bits`, `encoder`);
- the loss curve as the metric `loss`, one point per recorded step, and the manifest's numbers
  outside its configuration (final loss, seconds, samples per second, ...) as metrics;
- tags naming the model as mmgen does (`mmgen.kind`, `mmgen.name`, `mmgen.version`, the weights'
  checksum, the `models` row);
- the model folder's files as artifacts under `model/` (manifest and weights; not the training
  state, caches or older versions).

A plain folder is a local store: MLflow's SQLite backend (`DIR/mlflow.db`, its recommended local
store; MLflow 3 refuses new `./mlruns` file stores) with artifacts in `DIR/artifacts/`; browse it
with `mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db`. A URI (`http://HOST:5000`,
`sqlite:///...`, `postgresql://...`) is passed to MLflow as the tracking URI. The experiment is
`mmgen-KIND` (`mmgen-encoder`, `mmgen-hasher`, ...), the run is named `NAME@VERSION`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmgen.errors import ConfigError, MissingDependencyError, MmgenError

INSTALL_HINT = "MLflow tracking needs MLflow's client: pip install 'mmgen[mlflow]' (or: pip install mlflow-skinny)"
CURVE_KEY = "loss_curve"
# Manifest entries that are neither settings nor results: long lists, free text, nested records.
SKIPPED = frozenset({CURVE_KEY, "type", "created", "holdout.groups", "data.errors", "data.by_corpus"})
# Model-folder entries that are not the model: kept versions, resumable state, caches.
NOT_ARTIFACTS = frozenset({"versions", "train-state.pt", "train-state.pt.tmp", "text-cache"})
MAX_PARAM_CHARS = 500  # a longer value (a source list, say) is cut, with a marker


@dataclass(frozen=True)
class TrackedRun:
    """Where a training run was logged."""

    tracking_uri: str
    experiment: str
    run_id: str
    artifacts: int  # files logged

    def to_json(self) -> dict[str, Any]:
        """The run as JSON."""
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment, "run_id": self.run_id,
                "artifacts": self.artifacts}  # fmt: skip


def resolve_target(target: str) -> tuple[str, str | None]:
    """(tracking URI, artifact location or None) for `--mlflow DIR|URI`."""
    text = str(target).strip()
    if not text:
        raise ConfigError("--mlflow needs a folder (a local MLflow store) or a tracking URI")
    if "://" in text:
        return text, None
    folder = Path(text).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--mlflow {text}: {folder} is a file; give a folder for a local MLflow store, or a URI")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--mlflow {text}: cannot create the store folder {folder}: {exc.strerror or exc}") from exc
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


class TrackingError(MmgenError):
    """Logging a finished run to MLflow failed (the model itself is saved)."""


def check_available(target: str) -> None:
    """Before training starts: the target is usable and MLflow's client is installed (MissingDependencyError)."""
    resolve_target(target)
    try:
        import mlflow.tracking  # noqa: F401  (about 3 s, paid once: log_training imports it again)
    except ImportError:
        raise MissingDependencyError(INSTALL_HINT) from None


def split_manifest(manifest: dict[str, Any]) -> tuple[dict[str, str], dict[str, float]]:
    """(params, metrics) of a model manifest, flattened with dots.

    Every scalar is a parameter (a run's record of what it was); the numbers outside `config` are
    also metrics (final loss, seconds, samples per second, but also bits or dim: a manifest does not
    say which of its numbers are results), so they can be compared and plotted across runs.
    """
    params: dict[str, str] = {}
    metrics: dict[str, float] = {}

    def walk(value: Any, key: str, in_config: bool) -> None:
        if key in SKIPPED:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k), in_config or key == "config")
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not in_config:
            metrics[key] = float(value)
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        params[key] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 12] + " …(cut)"

    walk(manifest, "", False)
    return params, metrics


def artifact_files(folder: Path) -> list[Path]:
    """The model's files under its folder, sorted (not its kept versions, training state or caches)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts[0] not in NOT_ARTIFACTS)


def log_training(
    target: str, kind: str, manifest: dict[str, Any], folder: Path | None, *,
    version: int | None = None, model_id: int | None = None,
) -> TrackedRun:  # fmt: skip
    """Log one finished training run (its manifest and model folder) to MLflow; returns where it went."""
    uri, artifact_location = resolve_target(target)
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MissingDependencyError(INSTALL_HINT) from None
    try:
        return _log(MlflowClient(tracking_uri=uri), uri, artifact_location, kind, manifest, folder, version, model_id)
    except MmgenError:
        raise
    except Exception as exc:  # MLflow's own errors: an unreachable server, a store it cannot open
        where = f"; the model is saved in {folder}" if folder is not None else ""
        raise TrackingError(f"logging the {kind} run to MLflow at {uri} failed: {exc}{where}") from exc


def _log(
    client: Any, uri: str, artifact_location: str | None, kind: str, manifest: dict[str, Any], folder: Path | None,
    version: int | None, model_id: int | None,
) -> TrackedRun:  # fmt: skip
    from mlflow.entities import Metric, Param

    name = str(manifest.get("name") or (folder.name if folder else kind))
    experiment = f"mmgen-{kind}"
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, artifact_location=artifact_location)
    tags = {"mmgen.kind": kind, "mmgen.name": name}
    if version is not None:
        tags["mmgen.version"] = str(version)
    if manifest.get("checksum"):
        tags["mmgen.checksum"] = str(manifest["checksum"])
    if model_id is not None:
        tags["mmgen.model_id"] = str(model_id)
    if folder is not None:
        tags["mmgen.path"] = str(folder)
    run = client.create_run(experiment_id, run_name=f"{name}@{version}" if version else name, tags=tags)
    run_id = run.info.run_id
    try:
        params, metrics = split_manifest(manifest)
        stamp = _now_ms()
        rows = [Metric(k, v, stamp, 0) for k, v in sorted(metrics.items())]
        for point in manifest.get(CURVE_KEY) or []:
            step, loss = int(point[0]), float(point[1])
            rows.append(Metric("loss", loss, stamp, step))
        items = [Param(k, v) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):  # MLflow's batch limits: 100 params, 1,000 metrics
            client.log_batch(run_id, params=items[start : start + 100])
        for start in range(0, len(rows), 1000):
            client.log_batch(run_id, metrics=rows[start : start + 1000])
        files = artifact_files(folder) if folder is not None else []
        for path in files:
            parent = path.parent.relative_to(folder)
            client.log_artifact(run_id, str(path), artifact_path="/".join(("model", *parent.parts)))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return TrackedRun(uri, experiment, run_id, len(files))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
