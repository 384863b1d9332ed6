"""`mmgen dedup` and mmgen.dedup on a tiny real workspace: exact copies by hash, near copies by cosine
(resized and re-saved JPEG copies of a drawing), the CLI's JSON and errors, and `collapse`."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.dedup import collapse, exact_groups, find_duplicates, near_groups
from mmgen.dedup_pixels import DEFAULT_MIN_STRUCTURE
from mmgen.errors import ConfigError

runner = CliRunner()
# The tiny seeded encoder maps every drawing close to every other (cross pairs reach 0.9989 against
# this drawing); its changed copies score >= 0.9998 against it. A threshold between the two.
TINY_THRESHOLD = 0.9995
CHANGED = ("stripes-up2", "stripes-down", "stripes-jpeg90", "stripes-jpeg75")


def _stripes() -> Any:
    """A drawing unlike the corpus's plain shapes: purple stripes under an orange triangle."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (40, 40), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for x in range(0, 40, 8):
        draw.rectangle([x, 0, x + 3, 39], fill=(150, 30, 170))
    draw.polygon([(4, 36), (20, 6), (36, 36)], fill=(250, 140, 20))
    return im


@pytest.fixture(scope="module")
def dup_ws(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> dict[str, Any]:
    """The tiny workspace plus 3 byte-identical copies of one drawing and changed copies of another."""
    from PIL import Image

    from mmgen.data.sources import open_sources
    from mmgen.indexer import Indexer, IndexOptions
    from mmgen.store.db import open_store

    root = tmp_path_factory.mktemp("dedup")
    ws, manifest = _tiny_workspace().build(root, tiny_encoder)
    extra = root / "copies"
    extra.mkdir()
    for i in range(3):
        shutil.copy(manifest.parent / "green-circle-1.png", extra / f"copy{i}.png")
        (extra / f"copy{i}.txt").write_text(f"copy {i} of a green circle", encoding="utf-8")
    stripes = _stripes()
    stripes.save(extra / "stripes.png")
    stripes.resize((80, 80), Image.Resampling.BICUBIC).save(extra / "stripes-up2.png")
    stripes.resize((36, 36), Image.Resampling.LANCZOS).save(extra / "stripes-down.png")
    for quality in (90, 75):
        stripes.save(extra / f"stripes-jpeg{quality}.jpg", "JPEG", quality=quality)
    with open_store(ws.db_url) as store:
        Indexer(ws, store, tiny_encoder, IndexOptions(progress=False)).run(open_sources(str(extra)))
        report = find_duplicates(ws, store, threshold=TINY_THRESHOLD)
    ids = {ref.key: ref.id for ref in report.refs.values()}
    return {"ws": ws, "manifest": manifest, "extra": extra, "report": report, "ids": ids}


def _tiny_workspace() -> ModuleType:
    """tests/hashing/tiny_workspace.py under the name conftest's `load_tiny_workspace` gives it (a module fixture needs it)."""
    name = "mmgen_tests_tiny_workspace"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "hashing" / "tiny_workspace.py")
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _dedup(ws: Any, *args: str) -> Any:
    return runner.invoke(app, ["dedup", "--workspace", str(ws.root), *args], catch_exceptions=False)


def test_exact_groups_are_byte_identical_files(dup_ws) -> None:
    from mmgen.store.db import open_store

    report, ids = dup_ws["report"], dup_ws["ids"]
    assert report.items == 40 + 3 + 5
    assert len(report.exact) == 1
    (group,) = report.exact
    assert [report.refs[i].key for i in group] == ["green-circle-1", "copy0", "copy1", "copy2"]
    assert group == sorted(group) and report.hashes[group[0]]
    with open_store(dup_ws["ws"].db_url) as store:
        from mmgen.index.rows import load_vectors

        index_id = load_vectors(dup_ws["ws"], store, vectors=False).index_id
        assert exact_groups(store, index_id, "image") == report.exact
        assert exact_groups(store, index_id, "text") == []  # the copies have their own captions
    assert all(ids["stripes"] not in g for g in report.exact)  # its JPEG and resized copies differ in bytes


def test_near_groups_hold_the_changed_copies_and_nothing_else(dup_ws) -> None:
    report, ids = dup_ws["report"], dup_ws["ids"]
    stripes = [g for g in report.near if ids["stripes"] in g]
    assert len(stripes) == 1
    keys = {report.refs[i].key for i in stripes[0]}
    assert keys == {"stripes", *CHANGED}
    assert any(set(g) >= set(report.exact[0]) for g in report.near)  # exact copies are near copies too
    sizes = [len(g) for g in report.near]
    assert sizes == sorted(sizes, reverse=True) and all(g == sorted(g) for g in report.near)


def test_near_groups_match_brute_force_components_across_chunks() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 12)).astype(np.float32)
    noisy = base[:60] + 0.08 * rng.normal(size=(60, 12)).astype(np.float32)
    vectors = np.concatenate([base, noisy, base[:5]])  # 5 exact copies too
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(len(vectors)) * 10 + 3
    for threshold in (0.97, 0.7, 0.4):
        want = _brute_force_groups(vectors, ids, threshold)
        for chunk in (3, 17, 4096):
            assert near_groups(vectors, ids, threshold, chunk=chunk) == want
    chain = np.array([[1.0, 0.0], [0.8, 0.6], [0.28, 0.96]], dtype=np.float32)  # a~b, b~c, a and c apart
    assert near_groups(chain, [5, 6, 7], 0.95) == [] and near_groups(chain, [5, 6, 7], 0.8) == [[5, 6, 7]]
    assert near_groups(np.ones((1, 4), np.float32) / 2, [1]) == []


def _brute_force_groups(vectors: np.ndarray, ids: np.ndarray, threshold: float) -> list[list[int]]:
    close = vectors @ vectors.T >= threshold - 1e-6
    label = list(range(len(vectors)))

    def root(i: int) -> int:
        while label[i] != i:
            i = label[i]
        return i

    for i, j in zip(*np.nonzero(close)):
        a, b = root(int(i)), root(int(j))
        label[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(vectors)):
        groups.setdefault(root(i), []).append(int(ids[i]))
    out = [sorted(g) for g in groups.values() if len(g) >= 2]
    return sorted(out, key=lambda g: (-len(g), g[0]))


@pytest.mark.parametrize("threshold", [0.0, 1.5, -0.2, float("nan")])
def test_a_threshold_outside_0_1_is_refused(dup_ws, threshold: float) -> None:
    with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
        near_groups(np.eye(3, dtype=np.float32), [1, 2, 3], threshold)
    with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
        collapse(np.eye(3, dtype=np.float32), threshold)
    if threshold in (0.0, 1.5):
        res = _dedup(dup_ws["ws"], "--threshold", str(threshold))
        assert res.exit_code == 2
        assert "threshold" in res.stderr and "(0, 1]" in res.stderr and "Traceback" not in res.output


def test_cli_errors_are_one_line_and_exit_2(dup_ws) -> None:
    res = _dedup(dup_ws["ws"], "--index", "nope")
    assert res.exit_code == 2 and "no index named 'nope'" in res.stderr and "default" in res.stderr
    res = _dedup(dup_ws["ws"], "--modality", "audio")
    assert res.exit_code == 2 and "unknown modality 'audio'" in res.stderr and "image, text" in res.stderr
    res = _dedup(dup_ws["ws"], "--sheet", str(dup_ws["extra"] / "sheet.jpg"))
    assert res.exit_code == 2 and "PNG" in res.stderr


def test_cli_json_shape(dup_ws) -> None:
    res = _dedup(dup_ws["ws"], "--threshold", str(TINY_THRESHOLD), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == {"index", "modality", "threshold", "exact_only", "items", "counts", "exact", "near",
                        "picture_check", "seconds", "sheet"}  # fmt: skip
    check = out["picture_check"]
    assert set(check) == {"min_structure", "pairs", "dropped", "unchecked", "unreadable"}
    assert check["min_structure"] == DEFAULT_MIN_STRUCTURE and check["pairs"] >= 10 and check["unreadable"] == []
    assert out["index"] == "default" and out["modality"] == "image" and out["threshold"] == TINY_THRESHOLD
    assert out["items"] == 48 and out["exact_only"] is False and out["sheet"] is None
    assert out["counts"]["exact_groups"] == 1 and out["counts"]["exact_duplicates"] == 3
    assert out["counts"]["near_groups"] == len(out["near"]) >= 2
    exact = out["exact"][0]
    assert exact["size"] == 4 and len(exact["sha256"]) == 64
    assert set(exact["items"][0]) == {"id", "corpus", "key", "text", "uri"}
    assert exact["items"][1]["key"] == "copy0" and exact["items"][1]["text"] == "copy 0 of a green circle"
    near_keys = [{i["key"] for i in g["items"]} for g in out["near"]]
    assert {"stripes", *CHANGED} in near_keys


def _shapes(report: Any, group: list[int]) -> set[str]:
    keys = [report.refs[i].key for i in group]
    return {shape for shape in ("circle", "square", "stripes") for key in keys if shape in key}


def test_the_picture_check_splits_close_vectors_of_different_drawings(dup_ws) -> None:
    """The tiny encoder puts circles, squares and stripes within 0.99 of each other; their pictures differ."""
    from mmgen.store.db import open_store

    with open_store(dup_ws["ws"].db_url) as store:
        loose = find_duplicates(dup_ws["ws"], store, threshold=0.99, check_pictures=False)
        checked = find_duplicates(dup_ws["ws"], store, threshold=0.99)
        strict = find_duplicates(dup_ws["ws"], store, threshold=0.99, min_structure=1.0)
    assert loose.picture_check is None
    assert any(len(_shapes(loose, g)) > 1 for g in loose.near)
    assert checked.near and all(len(_shapes(checked, g)) == 1 for g in checked.near)
    summary = checked.picture_check
    assert summary["dropped"] > 0 and summary["unchecked"] == 0 and summary["pairs"] > summary["dropped"]
    stripes = [g for g in checked.near if dup_ws["ids"]["stripes"] in g]
    assert {checked.refs[i].key for i in stripes[0]} == {"stripes", *CHANGED}  # its copies pass the check
    assert strict.picture_check["dropped"] > summary["dropped"]


def test_a_moved_file_keeps_its_pairs_unchecked(tmp_path: Path, tiny_encoder, build_tiny_workspace) -> None:
    from PIL import Image

    from mmgen.data.sources import open_sources
    from mmgen.indexer import Indexer, IndexOptions
    from mmgen.store.db import open_store

    ws, _ = build_tiny_workspace(tmp_path / "ws", tiny_encoder)
    extra = tmp_path / "copies"
    extra.mkdir()
    stripes = _stripes()
    stripes.save(extra / "stripes.png")
    stripes.resize((80, 80), Image.Resampling.BICUBIC).save(extra / "stripes-up2.png")
    with open_store(ws.db_url) as store:
        Indexer(ws, store, tiny_encoder, IndexOptions(progress=False)).run(open_sources(str(extra)))
        (extra / "stripes-up2.png").rename(tmp_path / "moved.png")
        report = find_duplicates(ws, store, threshold=TINY_THRESHOLD)
    ids = {ref.key: ref.id for ref in report.refs.values()}
    assert any({ids["stripes"], ids["stripes-up2"]} <= set(g) for g in report.near)
    assert report.picture_check["unchecked"] >= 1 and report.picture_check["unreadable"] == [str(extra / "stripes-up2.png")]
    res = _dedup(ws, "--threshold", str(TINY_THRESHOLD))
    assert res.exit_code == 0 and "kept unchecked (1 files unreadable)" in res.stdout
    res = _dedup(ws, "--min-structure", "1.5")
    assert res.exit_code == 2 and "[-1, 1]" in res.stderr and "Traceback" not in res.output
    res = _dedup(ws, "--threshold", str(TINY_THRESHOLD), "--no-picture-check", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["picture_check"] is None


def test_the_help_states_the_default_bound() -> None:
    import typer

    command = typer.main.get_command(app).commands["dedup"]  # type: ignore[attr-defined]
    (option,) = [p for p in command.params if p.name == "min_structure"]
    assert f"[default: {DEFAULT_MIN_STRUCTURE}]" in option.help


def test_cli_prints_groups_and_draws_a_sheet(dup_ws) -> None:
    from PIL import Image

    sheet = dup_ws["extra"] / "out" / "dups.png"
    res = _dedup(dup_ws["ws"], "--threshold", str(TINY_THRESHOLD), "--limit", "1", "--sheet", str(sheet))
    assert res.exit_code == 0, res.output
    assert "exact group 1 (4 items)" in res.stdout and "copy 0 of a green circle" in res.stdout
    assert "near group 1 (" in res.stdout and "near group 2 (" not in res.stdout and "--limit 0 shows all" in res.stdout
    assert f"sheet: {sheet}" in res.stdout
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 100


def test_exact_only_skips_the_vector_pass(dup_ws, tmp_path: Path) -> None:
    # On a copy of the workspace with its image vectors deleted: only the hash pass can still run.
    ws_root = tmp_path / "ws"
    shutil.copytree(dup_ws["ws"].root, ws_root)
    (ws_root / "default" / "image.f32").unlink()
    res = runner.invoke(app, ["dedup", "--workspace", str(ws_root), "--exact-only", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["exact_only"] is True and out["near"] == [] and out["counts"]["near_groups"] == 0
    assert out["counts"]["exact_groups"] == 1 and "near" not in out["seconds"]
    res = runner.invoke(app, ["dedup", "--workspace", str(ws_root), "--exact-only"], catch_exceptions=False)
    assert "near copies (cosine >= 0.95): skipped (--exact-only)" in res.stdout


def test_collapse_keeps_the_best_ranked_of_near_copies(dup_ws, tiny_encoder) -> None:
    from mmgen.data.images import load_image

    extra, manifest = dup_ws["extra"], dup_ws["manifest"]
    files = [extra / "stripes-jpeg75.jpg", manifest.parent / "blue-square-0.png", extra / "stripes.png",
             extra / "stripes-up2.png", manifest.parent / "red-circle-2.png", extra / "stripes-down.png"]  # fmt: skip
    vectors = tiny_encoder.encode_image([load_image(f) for f in files])
    kept = collapse(vectors, TINY_THRESHOLD)
    assert kept[0] == 0 and 2 not in kept and 3 not in kept and 5 not in kept  # the re-saved JPEG ranked first stays
    assert 1 in kept and 4 in kept
    cosines = vectors[kept] @ vectors[kept].T
    assert (cosines[~np.eye(len(kept), dtype=bool)] < TINY_THRESHOLD).all()
    # Plain vectors: rank order decides, a copy of a dropped hit is judged against kept hits only.
    v = np.array([[1, 0], [0.99, 0.141], [0, 1], [0.96, 0.28], [0.6, 0.8]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert collapse(v, 0.95) == [0, 2, 4] and collapse(v, 1.0) == [0, 1, 2, 3, 4]
    assert collapse(np.zeros((0, 4), np.float32), 0.9) == [] and collapse(v[:1], 0.9) == [0]


def test_an_index_without_images_points_at_its_text_vectors(tmp_path: Path, tiny_encoder, text_folder) -> None:
    from mmgen.data.sources import open_sources
    from mmgen.indexer import Indexer, IndexOptions
    from mmgen.store.db import open_store
    from mmgen.workspace import Workspace

    (text_folder / "again.txt").write_text("a picture of a bus number 1", encoding="utf-8")  # = c001.txt
    ws = Workspace.resolve(tmp_path / "ws")
    with open_store(ws.db_url) as store:
        Indexer(ws, store, tiny_encoder, IndexOptions(progress=False)).run(open_sources(str(text_folder)))
    res = _dedup(ws)
    assert res.exit_code == 2 and "holds no image vectors; it holds text vectors (--modality text)" in res.stderr
    res = _dedup(ws, "--modality", "text", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["modality"] == "text" and out["items"] == 31
    assert [sorted(i["key"] for i in g["items"]) for g in out["exact"]] == [["again", "c001"]]


def test_index_skip_duplicates_refuses_exact_copies_with_their_original(tmp_path, tiny_encoder, build_tiny_workspace):
    import json
    import shutil

    from typer.testing import CliRunner

    from mmgen.cli import app

    ws, manifest = build_tiny_workspace(tmp_path, tiny_encoder)
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(manifest.parent / "red-circle-0.png", folder / "again.png")  # a copy of an indexed image
    shutil.copy(manifest.parent / "blue-square-1.png", folder / "twice-a.png")  # two copies of one new image
    from PIL import Image

    Image.new("RGB", (40, 40), (9, 200, 9)).save(folder / "fresh.png")
    Image.open(folder / "fresh.png").save(folder / "fresh-copy.png")
    runner = CliRunner()
    res = runner.invoke(app, ["index", str(folder), "--workspace", str(ws.root), "--skip-duplicates", "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    refused = {d["key"]: d["duplicate_of"] for d in report["duplicates"]}
    assert refused["again"].endswith(":red-circle-0") and refused["twice-a"].endswith(":blue-square-1")
    assert set(refused) == {"again", "twice-a", "fresh-copy"} and refused["fresh-copy"].endswith(":fresh")
    assert report["added"] == 1 and report["skipped"] == 3  # only `fresh` is new
    again = runner.invoke(app, ["index", str(folder), "--workspace", str(ws.root), "--json", "--quiet"])
    assert json.loads(again.stdout)["added"] == 3  # without the flag, copies are indexed as items of their own
