"""The checks of model weights: saved models against their manifests, index encoders against their indexes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from mmgen.check.report import ERROR, INFO, Action, CheckReport, Problem
from mmgen.errors import MmgenError
from mmgen.store.models import ModelRecord

if TYPE_CHECKING:
    from mmgen.store.db import Store
    from mmgen.store.models import IndexRecord
    from mmgen.workspace import Workspace

MODEL_KINDS = {"mmgen.encoder": "encoder", "mmgen.hasher": "hasher", "mmgen.captioner": "captioner",
               "mmgen.generator": "generator"}  # fmt: skip  (manifest type -> `models.kind`)


def check_encoder(ws: Workspace, rec: IndexRecord, report: CheckReport) -> None:
    """The index's encoder weights still hash to the checksum the index was built with (where they are local)."""
    try:
        checksum = _encoder_checksum(rec.encoder, ws.models_dir)
    except (MmgenError, OSError) as exc:
        report.add(Problem("encoder-missing", ERROR, f"encoder {rec.encoder} does not resolve: {exc}",
                           "neither search nor indexing can embed queries for this index",
                           "restore the encoder's files where the name points", index=rec.name, model=rec.encoder))
        return
    if checksum is not None and checksum != rec.encoder_checksum:
        report.add(Problem("encoder-changed", ERROR, f"the weights of {rec.encoder} hash to {checksum[:12]}; the index "
                           f"was built with {rec.encoder_checksum[:12]}", "search refuses the index (its vectors come "
                           "from other weights)", f"restore the weights, or re-embed: `mmgen index SOURCE --name "
                           f"{rec.name} --reembed`", index=rec.name, model=rec.encoder))  # fmt: skip


def _encoder_checksum(name: str, models_dir: Path) -> str | None:
    """The checksum `load_encoder(name).checksum()` would give, from the files alone; None for hub weights."""
    from mmgen.encoders.base import sha256_files
    from mmgen.encoders.factory import resolve_encoder_name
    from mmgen.encoders.openclip import checkpoint_files, weights_checksum
    from mmgen.encoders.st import model_files

    spec = resolve_encoder_name(name, models_dir)
    if spec.kind == "openclip-dir":
        return weights_checksum(checkpoint_files(Path(spec.source)))
    if spec.kind == "st" and Path(spec.source).is_dir():
        return sha256_files(model_files(Path(spec.source)), root=Path(spec.source))
    if spec.kind == "openclip" and spec.weights:
        path = Path(spec.weights).expanduser()
        path = path if path.is_absolute() or spec.cwd is None else Path(spec.cwd) / path
        return weights_checksum([path]) if path.is_file() else None
    return None


def check_models(ws: Workspace, store: Store, report: CheckReport) -> None:
    """Each saved model's manifest checksum against its weights, computed as its loader does."""
    if not ws.models_dir.is_dir():
        return
    for path in sorted(ws.models_dir.glob("*/manifest.json")):
        folder, name = path.parent, path.parent.name
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            kind = MODEL_KINDS.get(manifest.get("type"))
            if kind is None:
                continue
            actual = _model_checksum(folder, manifest)
        except (OSError, ValueError, AttributeError) as exc:
            report.models[name] = "model-unreadable"
            report.add(Problem("model-unreadable", ERROR, f"{folder}: {exc}", "the model does not load",
                               "restore its files, or train it again", model=name))  # fmt: skip
            continue
        recorded = str(manifest.get("checksum"))
        if actual != recorded:
            report.models[name] = "model-checksum-mismatch"
            refused = ("indexes built with it refuse it, and new vectors would come from weights never evaluated"
                       if kind == "encoder" else "its loader refuses them (never a silent fallback)")
            report.add(Problem("model-checksum-mismatch", ERROR, f"{kind} {name}: its weights hash to {actual[:12]}, "
                               f"its manifest says {recorded[:12]}", f"the weights were modified or half-written: "
                               f"{refused}", "not derivable: restore the files from a backup, or train the model "
                               "again", model=name))  # fmt: skip
            continue
        report.models[name] = "ok"
        with store.session() as s:
            known = s.scalar(select(ModelRecord.id).filter_by(kind=kind, name=name, version=recorded[:16]))
        if known is None:
            report.add(Problem("model-unregistered", INFO, f"{kind} {name} ({recorded[:12]}) has no row in the "
                               "store's models table", "outputs it makes cannot name it", "derivable: `mmgen check "
                               "--repair` registers it", model=name,
                               action=Action("register", model=name)))  # fmt: skip


def _model_checksum(folder: Path, manifest: dict[str, Any]) -> str:
    from mmgen.data.checksums import file_sha256
    from mmgen.encoders.base import sha256_files

    kind = manifest["type"]
    if kind == "mmgen.hasher":
        from mmgen.hashing.model import WEIGHTS as HASHER_WEIGHTS
        from mmgen.hashing.saved import CODEC

        method = manifest.get("method", "autoencoder")
        return file_sha256(folder / (HASHER_WEIGHTS if method == "autoencoder" else str(manifest.get("codec", CODEC))))
    if kind == "mmgen.encoder":
        from mmgen.encoders.openclip import checkpoint_files, weights_checksum

        return weights_checksum(checkpoint_files(folder))
    if kind == "mmgen.captioner":
        from mmgen.generate.caption import artifact_files

        return sha256_files(artifact_files(folder), root=folder)
    from mmgen.generate.image_model import WEIGHTS as GENERATOR_WEIGHTS

    return file_sha256(folder / GENERATOR_WEIGHTS)

