"""Sharded FAISS indexes against one index on seeded data: exact equality for Flat, the on-disk merge
of IVF shards, removal across shards, and shard files rebuilt from the vectors by catch-up and check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmgen.errors import VectorIndexError
from mmgen.index import IndexFolder, Preset, resolve_preset
from mmgen.index.faiss_index import FaissIndex
from mmgen.index.shards import ShardedIndex, merge_topk

DIM = 16


def unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ivf_preset(nprobe: int = 3) -> Preset:
    return Preset(name="ivf8", factory="IVF8,Flat", min_train=8, search={"nprobe": nprobe})


def make_folder(tmp_path: Path, preset: Preset, shards: int) -> IndexFolder:
    return IndexFolder.create(tmp_path / f"ix{shards}", name="ix", encoder="enc:a", encoder_checksum="a" * 64,
                              dim=DIM, preset=preset, shards=shards)  # fmt: skip


def assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[1], want[1])
    found = want[1] >= 0
    np.testing.assert_allclose(got[0][found], want[0][found], atol=1e-6)


def built(preset: Preset, ids: np.ndarray, base: np.ndarray, shards: int) -> tuple[FaissIndex, ShardedIndex]:
    one, many = FaissIndex(DIM, preset), ShardedIndex.create(DIM, preset, shards)
    for index in (one, many):
        if not index.is_trained:
            index.train(base)
        index.add(ids, base)
    return one, many


def test_sharded_flat_search_equals_one_index() -> None:
    base, ids = unit(700, 1), np.arange(700, dtype=np.int64) * 5 + 2
    one, many = built(resolve_preset("flat"), ids, base, 3)
    assert many.count == 700 and sorted(many.ids().tolist()) == sorted(ids.tolist())
    assert {len(s.ids()) for s in many.shards} == {233, 234}  # % N keeps them balanced
    rng = np.random.default_rng(2)
    queries = unit(300, 3)
    for k in (1, 7, 10, 64, 1000):
        assert_same(many.search(queries, k), one.search(queries, k))
    for size in (1, 2, 9, 40, 300):  # fewer allowed ids than k, some shards with none
        allowed = rng.choice(ids, size, replace=False)
        for k in (1, 10, 50):
            assert_same(
                many.search(queries[:50], k, allowed_ids=allowed), one.search(queries[:50], k, allowed_ids=allowed)
            )


def test_merge_breaks_ties_by_lower_id_and_pads() -> None:
    scores = [np.array([[0.5, 0.1]], np.float32), np.array([[0.5, 0.3]], np.float32)]
    ids = [np.array([[9, 3]]), np.array([[4, -1]])]
    got_scores, got_ids = merge_topk(list(zip(scores, ids)), 5, 1)
    assert got_ids.tolist() == [[4, 9, 3, -1, -1]] and got_scores[0, 2] == pytest.approx(0.1)


def test_removal_works_across_shards() -> None:
    base, ids = unit(300, 4), np.arange(300, dtype=np.int64)
    for preset in (resolve_preset("flat"), ivf_preset(8)):
        one, many = built(preset, ids, base, 3)
        gone = np.arange(0, 300, 7)
        assert many.remove(np.concatenate([gone, [999]])) == one.remove(gone) == len(gone)
        assert many.count == one.count == 300 - len(gone) and not set(gone.tolist()) & set(many.ids().tolist())
        assert_same(many.search(base[:40], 10), one.search(base[:40], 10))
        kept = np.setdiff1d(ids, gone)
        _, top = many.search(base[kept[:40]], 1)
        assert top[:, 0].tolist() == kept[:40].tolist()


def test_ivf_shards_share_one_training_and_merge_on_disk(tmp_path: Path) -> None:
    base = unit(900, 5)
    folder = make_folder(tmp_path, ivf_preset(), shards=3)
    slots = folder.vectors("image").append(base)
    rep = folder.sync("image", slots[::2][:400])  # gaps in the row ids, as after deletions
    assert rep.rebuilt
    folder.save("image")
    assert [p.name for p in folder.faiss_files("image")] == [f"image.shard-{s}-of-3.faiss" for s in range(3)]
    assert all(p.exists() for p in folder.faiss_files("image")) and not (folder.root / "image.faiss").exists()
    sharded = folder.faiss("image")
    single = make_folder(tmp_path, ivf_preset(), shards=1)
    single.vectors("image").append(base)
    single.sync("image", slots[::2][:400])
    queries = unit(200, 6)
    assert_same(sharded.search(queries, 10), single.faiss("image").search(queries, 10))  # one quantizer, trained once

    path = folder.merge_ondisk("image")
    assert path.name == "image.merged-1.faiss" and path.with_suffix(".ivfdata").exists()
    merged = folder.load_merged("image")
    assert merged.count == 400 and sorted(merged.ids().tolist()) == sorted(sharded.ids().tolist())
    allowed = slots[::2][:400][::3]
    for k in (1, 10, 100):
        assert_same(merged.search(queries, k), sharded.search(queries, k))
        assert_same(merged.search(queries, k, allowed_ids=allowed), sharded.search(queries, k, allowed_ids=allowed))
    with pytest.raises(VectorIndexError, match="read-only"):
        merged.add(slots[:1], base[:1])

    folder.sync("image", slots[::2])  # more rows: the merge is stale until merged again
    folder.save("image")
    with pytest.raises(VectorIndexError, match="stale"):
        IndexFolder.open(folder.root).load_merged("image")
    assert folder.merge_ondisk("image").name == "image.merged-2.faiss"
    assert sorted(p.name for p in folder.root.glob("image.merged-*")) == [
        "image.merged-2.faiss",
        "image.merged-2.ivfdata",
    ]
    assert IndexFolder.open(folder.root).load_merged("image").count == len(slots[::2])


def test_on_disk_merge_needs_ivf(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, resolve_preset("flat"), shards=2)
    folder.sync("text", folder.vectors("text").append(unit(10)))
    folder.save("text")
    with pytest.raises(VectorIndexError, match="IVF preset"):
        folder.merge_ondisk("text")


@pytest.mark.parametrize("preset", [resolve_preset("flat"), ivf_preset()])
def test_a_lost_or_corrupt_shard_is_rebuilt_from_the_vectors(tmp_path: Path, preset: Preset) -> None:
    base = unit(400, 7)
    folder = make_folder(tmp_path, preset, shards=4)
    slots = folder.vectors("text").append(base)
    folder.sync("text", slots)
    folder.save("text")
    before = folder.faiss("text").search(base[:30], 5)
    files = folder.faiss_files("text")
    untouched = files[0].stat().st_mtime_ns
    files[2].unlink()
    files[3].write_bytes(files[3].read_bytes()[:100])
    again = IndexFolder.open(folder.root)
    assert again.faiss("text").count == 200
    rep = again.sync("text", slots)
    assert rep.added == 200 and not rep.rebuilt and "shard 2 missing" in rep.reason and "shard 3" in rep.reason
    again.save("text")
    assert files[0].stat().st_mtime_ns == untouched  # only the restarted shards are written
    assert_same(IndexFolder.open(folder.root).faiss("text").search(base[:30], 5), before)


def test_an_existing_single_file_folder_loads_unchanged(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, resolve_preset("flat"), shards=1)
    base = unit(50, 8)
    slots = folder.vectors("image").append(base)
    folder.sync("image", slots)
    folder.save("image")
    manifest = json.loads((folder.root / "manifest.json").read_text())
    del manifest["shards"]  # as written before sharding
    (folder.root / "manifest.json").write_text(json.dumps(manifest))
    old = IndexFolder.open(folder.root)
    assert old.shards == 1 and [p.name for p in old.faiss_files("image")] == ["image.faiss"]
    assert isinstance(old.faiss("image"), FaissIndex) and old.row_state("image") == (50, 49)
    assert old.sync("image", slots).added == 0
    old.save("image")
    assert json.loads((folder.root / "manifest.json").read_text())["modalities"]["image"]["file"] == "image.faiss"


def test_changing_the_shard_count_rebuilds_from_the_vectors(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, resolve_preset("flat"), shards=1)
    base = unit(90, 9)
    slots = folder.vectors("image").append(base)
    folder.sync("image", slots)
    folder.save("image")
    want = folder.faiss("image").search(base[:20], 8)
    for n in (3, 2, 1):
        folder.set_shards(n)
        assert folder.sync("image", slots).added == 90  # from the vectors, into the new layout
        folder.save("image")
        assert sorted(p.name for p in folder.root.glob("image*.faiss")) == sorted(
            p.name for p in folder.faiss_files("image")
        )
        assert_same(IndexFolder.open(folder.root).faiss("image").search(base[:20], 8), want)
    with pytest.raises(VectorIndexError, match="1 to"):
        folder.set_shards(0)


def test_catch_up_and_check_rebuild_a_deleted_shard(
    tmp_path: Path, tiny_encoder: Any, build_tiny_workspace: Any
) -> None:
    from mmgen.catalog import catch_up, open_or_create_index
    from mmgen.check import CheckOptions, check_workspace
    from mmgen.data.sources import open_sources
    from mmgen.indexer import Indexer, IndexOptions
    from mmgen.search import Searcher
    from mmgen.store.db import open_store
    from mmgen.workspace import Workspace

    manifest = load_corpus(tmp_path, build_tiny_workspace)
    ws = Workspace.resolve(tmp_path / "ws")
    store = open_store(ws.db_url)
    try:
        index_id, _ = open_or_create_index(ws, store, "default", tiny_encoder, None, shards=3)
        Indexer(ws, store, tiny_encoder, IndexOptions(progress=False)).run(open_sources(str(manifest)))
        root = ws.index_dir("default")
        shard = root / "image.shard-1-of-3.faiss"
        assert shard.exists() and not (root / "image.faiss").exists()
        searcher = Searcher(ws, store, "default", device="cpu")
        queries = searcher.encode_queries(texts=["a red circle", "a blue square"])
        want = searcher.search_vectors(queries, to="image", k=5)
        shard.unlink()
        folder = IndexFolder.open(root)
        catch_up(store, index_id, folder, "image")
        assert shard.exists() and IndexFolder.open(root).faiss("image").count == 16
        searcher = Searcher(ws, store, "default", device="cpu")
        assert [[h.id for h in hits] for hits in searcher.search_vectors(queries, to="image", k=5)[1]] == [
            [h.id for h in hits] for hits in want[1]
        ]
    finally:
        store.close()
    assert check_workspace(ws).ok
    (root / "text.shard-2-of-3.faiss").unlink()
    report = check_workspace(ws)
    assert [(p.code, p.modality) for p in report.problems] == [("faiss-missing", "text")]
    assert "text.shard-2-of-3.faiss" in report.problems[0].message
    fixed = check_workspace(ws, CheckOptions(repair=True))
    assert fixed.ok and (root / "text.shard-2-of-3.faiss").exists()
    store = open_store(ws.db_url)
    try:  # re-embedding keeps the layout unless told otherwise
        assert open_or_create_index(ws, store, "default", tiny_encoder, None, reembed=True)[1].shards == 3
        assert open_or_create_index(ws, store, "default", tiny_encoder, None, shards=2)[1].shards == 2
        assert IndexFolder.open(root).shards == 2
    finally:
        store.close()


def load_corpus(tmp_path: Path, build_tiny_workspace: Any) -> Path:
    """The tiny workspace's corpus manifest (16 captioned drawings), without indexing it."""
    import sys

    return sys.modules[build_tiny_workspace.__module__].write_corpus(tmp_path / "corpus", per_group=2)


def test_cli_index_with_shards_searches_as_one_file(tmp_path: Path, image_folder: Path, tiny_clip: Any) -> None:
    """`mmgen index --shards 3`: three shard files per modality, and the same hits as a one-file index."""
    from typer.testing import CliRunner

    from mmgen.cli import app

    runner = CliRunner()

    def hits(ws: Path, *extra: str) -> list[tuple[str, float]]:
        res = runner.invoke(app, ["index", str(image_folder), "--workspace", str(ws), "--encoder",
                                  tiny_clip.dir_name, "--quiet", *extra], catch_exceptions=False)  # fmt: skip
        assert res.exit_code == 0, res.output
        out = runner.invoke(app, ["search", "a red circle", "--workspace", str(ws), "--to", "image", "-k", "8",
                                  "--json"], catch_exceptions=False)  # fmt: skip
        return [(h["key"], round(h["score"], 5)) for h in json.loads(out.stdout)["hits"]]

    one = hits(tmp_path / "one")
    three = hits(tmp_path / "three", "--shards", "3")
    assert three == one and len(one) == 8
    assert len(list((tmp_path / "three" / "default").glob("image.shard-*-of-3.faiss"))) == 3


def test_search_answers_from_the_on_disk_merge_while_it_is_fresh(tmp_path: Path, image_folder: Path,
                                                                 tiny_clip: Any) -> None:  # fmt: skip
    """`mmgen index --shards 2 --merge-ondisk` with an IVF preset: a Searcher reads the memory-mapped merge (the
    shards never loaded) with the shards' answers; once more rows are indexed the stale merge is left alone."""
    import shutil

    from typer.testing import CliRunner

    from mmgen.cli import app
    from mmgen.search import Searcher
    from mmgen.store.db import open_store
    from mmgen.workspace import Workspace

    runner = CliRunner()
    ws_root = tmp_path / "ws"

    def index(folder: Path, *extra: str) -> None:
        res = runner.invoke(app, ["index", str(folder), "--workspace", str(ws_root), "--encoder", tiny_clip.dir_name,
                                  "--preset", "IVF2,Flat", "--shards", "2", "--quiet", *extra],
                            catch_exceptions=False)  # fmt: skip
        assert res.exit_code == 0, res.output

    def keys(result: Any) -> list[tuple[str, float]]:
        return [(h.key, round(h.score, 5)) for h in result.hits]

    index(image_folder, "--merge-ondisk")
    ws = Workspace.resolve(ws_root)
    with open_store(ws.db_url) as store:
        searcher = Searcher(ws, store)
        merged = searcher._faiss("image")
        assert not merged.writable and merged.count == 12  # the read-only, memory-mapped merge
        assert "image" not in searcher.folder._faiss  # the shards were not read into memory
        from_merge = keys(searcher.search("a red circle", to="image", k=6))
        searcher.folder._faiss.clear()
        shards = ShardedIndex.load(ws.index_dir("default") / "image.faiss", searcher.folder.dim,
                                   searcher.folder.preset, 2)[0]  # fmt: skip
        searcher._merged.pop("image")
        searcher.folder._faiss["image"] = shards
        assert keys(searcher.search("a red circle", to="image", k=6)) == from_merge and len(from_merge) == 6

    more = tmp_path / "more"
    more.mkdir()
    for name in ("img000", "img001"):
        shutil.copy(image_folder / f"{name}.png", more / f"copy-{name}.png")
        (more / f"copy-{name}.txt").write_text("a copied circle", encoding="utf-8")
    index(more)  # no --merge-ondisk: the merge now lacks two rows
    with open_store(ws.db_url) as store:
        searcher = Searcher(ws, store)
        assert isinstance(searcher._faiss("image"), ShardedIndex) and searcher._faiss("image").count == 14
        assert any(h.key.startswith("copy-") for h in searcher.search("a copied circle", to="image", k=14).hits)


def test_an_index_adds_shards_past_the_rows_per_shard_limit(tmp_path: Path, image_folder: Path, tiny_clip: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Without --shards, `mmgen index` splits the FAISS files once the live rows pass MMGEN_SHARD_ROWS per shard;
    it never merges them back, --shards wins, and 0 turns it off. The hits stay those of one file."""
    from typer.testing import CliRunner

    from mmgen.cli import app
    from mmgen.index.shards import auto_shard_count, shard_rows_limit

    runner = CliRunner()

    def index(ws: Path, *extra: str) -> dict[str, Any]:
        res = runner.invoke(app, ["index", str(image_folder), "--workspace", str(ws), "--encoder", tiny_clip.dir_name,
                                  "--json", *extra], catch_exceptions=False)  # fmt: skip
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    def hits(ws: Path) -> list[tuple[str, float]]:
        out = runner.invoke(app, ["search", "a red circle", "--workspace", str(ws), "--to", "image", "-k", "8",
                                  "--json"], catch_exceptions=False)  # fmt: skip
        return [(h["key"], round(h["score"], 5)) for h in json.loads(out.stdout)["hits"]]

    one = tmp_path / "one"
    index(one)
    monkeypatch.setenv("MMGEN_SHARD_ROWS", "5")  # 16 captions (4 of broken images): ceil(16 / 5) = 4 shards
    auto = tmp_path / "auto"
    report = index(auto)
    assert report["sync"]["shards"] == "split into 4 shard files: 16 rows, past 5 per shard"
    assert IndexFolder.open(auto / "default").shards == 4 and hits(auto) == hits(one)
    monkeypatch.setenv("MMGEN_SHARD_ROWS", "100")  # a higher limit later never merges shards back
    assert "shards" not in index(auto)["sync"] and IndexFolder.open(auto / "default").shards == 4
    monkeypatch.setenv("MMGEN_SHARD_ROWS", "5")
    explicit = tmp_path / "explicit"
    index(explicit, "--shards", "1")
    assert IndexFolder.open(explicit / "default").shards == 1
    monkeypatch.setenv("MMGEN_SHARD_ROWS", "0")
    off = tmp_path / "off"
    index(off)
    assert IndexFolder.open(off / "default").shards == 1
    monkeypatch.setenv("MMGEN_SHARD_ROWS", "lots")
    res = runner.invoke(app, ["index", str(image_folder), "--workspace", str(off), "--encoder", tiny_clip.dir_name])
    assert res.exit_code == 2 and "MMGEN_SHARD_ROWS" in res.output
    assert auto_shard_count(10_000_001, 1, 5_000_000) == 3 and auto_shard_count(10, 4, 5) == 4
    assert auto_shard_count(10**12, 1, 1) == 1024 and shard_rows_limit(7) == 7
