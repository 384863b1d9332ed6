"""`mmgen check` on a tiny real workspace (tiny open_clip vectors, a trained hasher's codes): a clean one is clean;
each kind of damage is found, explained and, where it is derivable, repaired; what is not derivable is left and reported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, func, select
from typer.testing import CliRunner

from mmgen.catalog import live_row_ids
from mmgen.check import CheckOptions, CheckReport, check_workspace
from mmgen.cli import app
from mmgen.data.sources import open_sources
from mmgen.errors import ConfigError, StoreError
from mmgen.index import IndexFolder
from mmgen.index.binary import BinaryIndex
from mmgen.index.presets import Preset
from mmgen.indexer import Indexer, IndexOptions
from mmgen.store.db import current_revision, downgrade, head_revision, open_store
from mmgen.store.models import IndexRow, Item
from mmgen.train.hasher import HasherConfig, train_hasher

TINY_HASHER = {"steps": 10, "anchors": 8, "neighbours": 4, "hidden": 16, "progress": False, "device": "cpu"}


def index(ws: Any, encoder: Any, manifest: Path, **kw: Any) -> Any:
    store = open_store(ws.db_url)
    try:
        return Indexer(ws, store, encoder, IndexOptions(progress=False, **kw)).run(open_sources(str(manifest)))
    finally:
        store.close()


@pytest.fixture()
def ws(tmp_path: Path, tiny_encoder: Any, build_tiny_workspace: Any) -> tuple[Any, Path]:
    """(workspace, manifest): index `default`, 16 drawings with captions, 32-bit codes of a trained hasher `h32`."""
    ws, manifest = build_tiny_workspace(tmp_path, tiny_encoder, per_group=2)
    train_hasher(ws, HasherConfig(bits=32, name="h32", **TINY_HASHER))
    index(ws, tiny_encoder, manifest, hash="h32")
    return ws, manifest


def codes(report: CheckReport) -> list[str]:
    return sorted(p.code for p in report.problems)


def problem(report: CheckReport, code: str, modality: str | None = None) -> Any:
    found = [p for p in report.problems if p.code == code and (modality is None or p.modality == modality)]
    assert found, f"no {code} in {codes(report)}"
    return found[0]


def folder(ws: Any) -> IndexFolder:
    return IndexFolder.open(ws.index_dir("default"))


def item_count(ws: Any) -> int:
    store = open_store(ws.db_url)
    try:
        with store.session() as s:
            return int(s.scalar(select(func.count(Item.id))))
    finally:
        store.close()


def test_a_clean_workspace_is_clean_and_the_cli_says_so(ws: tuple[Any, Path]) -> None:
    workspace, _ = ws
    report = check_workspace(workspace)
    assert report.ok and report.problems == [] and report.revision == report.head == head_revision()
    assert report.indexes["default"]["hasher"] == "h32"
    assert report.indexes["default"]["modalities"]["image"] == {"rows": 16, "vectors": 16, "faiss": 16, "codes": 16}
    assert report.models == {"h32": "ok"}

    result = CliRunner().invoke(app, ["check", "--workspace", str(workspace.root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True and data["problems"] == [] and data["counts"] == {"error": 0, "warning": 0, "info": 0}
    assert "found" not in data  # no repair ran

    text = CliRunner().invoke(app, ["check", "--workspace", str(workspace.root)])
    assert text.exit_code == 0 and "ok (0 errors" in text.output and "index default" in text.output


def test_a_deleted_faiss_file_is_found_and_rebuilt(ws: tuple[Any, Path]) -> None:
    workspace, _ = ws
    (workspace.index_dir("default") / "image.faiss").unlink()
    report = check_workspace(workspace)
    p = problem(report, "faiss-missing")
    assert (p.severity, p.index, p.modality) == ("error", "default", "image") and "find nothing" in p.meaning
    assert p.action is not None and "--repair" in p.repair and not report.ok

    fixed = check_workspace(workspace, CheckOptions(repair=True))
    assert fixed.ok and fixed.problems == [] and [x.code for x in fixed.found or []] == ["faiss-missing"]
    assert any("caches rebuilt" in line for line in fixed.repaired)
    assert folder(workspace).faiss("image").count == 16


def test_truncated_and_corrupted_faiss_files_are_rebuilt(ws: tuple[Any, Path]) -> None:
    workspace, _ = ws
    root = workspace.index_dir("default")
    text = (root / "text.faiss").read_bytes()
    (root / "text.faiss").write_bytes(text[: len(text) // 2])  # truncated: does not load
    # the default preset (flat-fp16) holds each vector as 16-bit floats: the check allows their rounding only
    vector = folder(workspace).vectors("image").get(np.array([3]))[0].astype(np.float16).tobytes()
    image = (root / "image.faiss").read_bytes()
    assert image.count(vector) == 1
    (root / "image.faiss").write_bytes(image.replace(vector, np.full(16, 0.25, np.float16).tobytes()))  # loads, wrong

    report = check_workspace(workspace)
    assert problem(report, "faiss-corrupt", "text").severity == "error"
    wrong = problem(report, "faiss-wrong-vectors", "image")
    assert wrong.count == 1 and wrong.examples == ["3"] and "wrong vectors" in wrong.meaning

    fixed = check_workspace(workspace, CheckOptions(repair=True))
    assert fixed.ok, codes(fixed)
    f = folder(workspace)
    rebuilt = f.vectors("image").get(np.array([3]))[0].astype(np.float16).astype(np.float32)  # as fp16 holds it
    np.testing.assert_array_equal(f.faiss("image").index.reconstruct(3), rebuilt)


def test_garbage_vectors_past_the_committed_rows_are_only_informational(ws: tuple[Any, Path]) -> None:
    workspace, _ = ws
    garbage = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32) * 7  # not unit-norm
    folder(workspace).vectors("image").append(garbage)
    report = check_workspace(workspace)
    p = problem(report, "vectors-past-rows", "image")
    assert (p.severity, p.count) == ("info", 3) and "killed" in p.meaning
    assert codes(report) == ["vectors-past-rows"] and report.ok
    result = CliRunner().invoke(app, ["check", "--workspace", str(workspace.root)])
    assert result.exit_code == 0 and "INFO" in result.output and "vectors-past-rows" in result.output


def test_a_deleted_index_row_leaves_stale_caches_and_an_item_without_its_vector(ws: tuple[Any, Path],
                                                                               tiny_encoder: Any) -> None:  # fmt: skip
    workspace, manifest = ws
    store = open_store(workspace.db_url)
    with store.session() as s:
        row = s.scalars(select(IndexRow).where(IndexRow.modality == "text").order_by(IndexRow.row_id)).first()
        key = s.get(Item, row.item_id).key
        s.execute(delete(IndexRow).where(IndexRow.id == row.id))
        s.commit()
    store.close()

    report = check_workspace(workspace)
    stale = problem(report, "faiss-stale", "text")
    assert stale.severity == "warning" and "1 no longer live" in stale.message and stale.action is not None
    assert problem(report, "codes-stale", "text").action is not None
    missing = problem(report, "row-missing", "text")
    assert missing.examples == [key] and missing.action is None and "mmgen index" in missing.repair

    fixed = check_workspace(workspace, CheckOptions(repair=True))
    assert codes(fixed) == ["row-missing"] and not fixed.ok  # not derivable: the encoder must embed it again
    assert item_count(workspace) == 16
    result = CliRunner().invoke(app, ["check", "--workspace", str(workspace.root)])
    assert result.exit_code == 1 and "row-missing" in result.output

    assert index(workspace, tiny_encoder, manifest).updated == 1
    assert check_workspace(workspace).ok


def test_changed_model_weights_are_reported_never_repaired(ws: tuple[Any, Path]) -> None:
    workspace, _ = ws
    weights = workspace.models_dir / "h32" / "hasher.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) - 100] ^= 0xFF
    weights.write_bytes(bytes(data))

    report = check_workspace(workspace, CheckOptions(repair=True))
    p = problem(report, "model-checksum-mismatch")
    assert (p.severity, p.model) == ("error", "h32") and p.action is None and "restore" in p.repair
    assert problem(report, "codes-hasher-unloadable").model == "h32"
    assert report.models == {"h32": "model-checksum-mismatch"} and not report.ok
    assert item_count(workspace) == 16 and folder(workspace).codes("image").count == 16  # nothing deleted


def test_a_deleted_or_damaged_code_cache_is_re_encoded(ws: tuple[Any, Path]) -> None:
    workspace, _ = ws
    root = workspace.index_dir("default")
    BinaryIndex.delete_files(root / "image.codes.faiss")
    info = folder(workspace).hash
    assert info is not None
    text = BinaryIndex.load(root / "text.codes.faiss", 32, Preset.from_json(info["preset"]))
    original = text.slot_codes()[5].copy()
    text.remove(np.array([5]))
    text.add(np.array([5]), (~original)[None, :])  # same ids, wrong code
    text.save(root / "text.codes.faiss")

    report = check_workspace(workspace)
    assert problem(report, "codes-missing", "image").model == "h32"
    wrong = problem(report, "codes-wrong", "text")
    assert wrong.examples == ["5"] and wrong.severity == "error"

    fixed = check_workspace(workspace, CheckOptions(repair=True))
    assert fixed.ok, codes(fixed)
    f = folder(workspace)
    assert f.codes("image").count == 16 and (f.codes("text").slot_codes()[5] == original).all()


def test_a_store_one_revision_behind_is_migrated(ws: tuple[Any, Path]) -> None:
    workspace, _ = ws
    downgrade(workspace.db_url, "-1")
    behind = current_revision(workspace.db_url)
    assert behind != head_revision()
    report = check_workspace(workspace)
    p = problem(report, "store-behind")
    assert report.revision == behind and p.severity == "warning" and "mmgen db upgrade" in p.repair
    assert codes(report) == ["store-behind"]  # the rows were still read and found consistent

    fixed = check_workspace(workspace, CheckOptions(repair=True))
    assert fixed.ok and fixed.revision == head_revision() == current_revision(workspace.db_url)
    assert "store: migrated to head" in fixed.repaired


def test_prune_deletes_rows_of_corrupt_vectors_and_unindexed_items_only_when_asked(ws: tuple[Any, Path],
                                                                                  tiny_encoder: Any) -> None:  # fmt: skip
    workspace, manifest = ws
    vectors = folder(workspace).vectors("image")
    with open(vectors.path, "r+b") as fh:  # a NaN in live row 2
        fh.seek(64 + 2 * 16 * 4)
        fh.write(np.full(16, np.nan, np.float32).tobytes())
    store = open_store(workspace.db_url)
    with store.session() as s:
        lonely = s.scalars(select(Item).order_by(Item.id)).first()
        s.execute(delete(IndexRow).where(IndexRow.item_id == lonely.id))
        s.commit()
    store.close()

    report = check_workspace(workspace, CheckOptions(repair=True))
    assert problem(report, "vectors-corrupt", "image").action.prune  # type: ignore[union-attr]
    assert problem(report, "item-unindexed").examples == [f"{Path(manifest).resolve()}:{lonely.key}"]
    assert item_count(workspace) == 16  # --repair alone deletes no item and no row

    pruned = check_workspace(workspace, CheckOptions(repair=True, prune=True))
    assert any("deleted 1 rows" in line for line in pruned.repaired)
    assert any("deleted 1 items" in line for line in pruned.repaired)
    assert item_count(workspace) == 15 and codes(pruned) == ["row-missing"]  # row 2's item waits for its image
    assert 2 not in live_row_ids(open_store(workspace.db_url), 1, "image")

    rep = index(workspace, tiny_encoder, manifest)
    assert (rep.added, rep.updated) == (1, 1)
    assert check_workspace(workspace).ok


def test_a_truncated_vector_file_needs_prune_and_a_new_index_run(ws: tuple[Any, Path], tiny_encoder: Any) -> None:
    workspace, manifest = ws
    vectors = folder(workspace).vectors("text")
    with open(vectors.path, "r+b") as fh:
        fh.truncate(64 + 14 * 16 * 4)  # rows 14 and 15 are gone
    (workspace.index_dir("default") / "text.faiss").unlink()

    report = check_workspace(workspace, CheckOptions(repair=True))  # the cache cannot be rebuilt from missing rows
    assert any("caches not rebuilt" in line for line in report.repaired)
    past = problem(report, "rows-past-vectors", "text")
    assert past.count == 2 and past.action is not None and past.action.prune and "--prune" in past.repair
    assert problem(report, "faiss-missing", "text") and item_count(workspace) == 16

    pruned = check_workspace(workspace, CheckOptions(repair=True, prune=True))
    assert codes(pruned) == ["row-missing"] and problem(pruned, "row-missing").count == 2
    assert index(workspace, tiny_encoder, manifest).updated == 2
    assert check_workspace(workspace).ok


def test_changed_encoder_weights_are_reported(tmp_path: Path, tiny_clip: Any, build_tiny_workspace: Any) -> None:
    from mmgen.encoders import load_encoder

    copy = tmp_path / "encoder"
    shutil.copytree(tiny_clip.folder, copy)
    workspace, _ = build_tiny_workspace(tmp_path, load_encoder(f"openclip:{copy}", device="cpu"), per_group=1)
    assert check_workspace(workspace).ok
    weights = copy / "open_clip_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    report = check_workspace(workspace, CheckOptions(repair=True))
    p = problem(report, "encoder-changed")
    assert p.index == "default" and p.model == f"openclip:{copy}" and "--reembed" in p.repair and not report.ok


def test_cli_refusals(tmp_path: Path, ws: tuple[Any, Path]) -> None:
    workspace, _ = ws
    result = CliRunner().invoke(app, ["check", "--workspace", str(workspace.root), "--prune"])
    assert result.exit_code == 2 and "--repair" in result.output
    result = CliRunner().invoke(app, ["check", "--workspace", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no store" in result.output
    with pytest.raises(ConfigError):
        check_workspace(workspace, CheckOptions(prune=True))
    with pytest.raises(StoreError):
        check_workspace(type(workspace).resolve(tmp_path / "nothing"))
    (workspace.index_dir("default") / "image.faiss").unlink()
    result = CliRunner().invoke(app, ["check", "--workspace", str(workspace.root), "--repair", "--json"])
    data = json.loads(result.output)
    assert result.exit_code == 0 and data["ok"] and [p["code"] for p in data["found"]] == ["faiss-missing"]
    assert data["found"][0]["repairable"] is True and data["repaired"]
