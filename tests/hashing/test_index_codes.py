"""`mmgen index --hash` and the codes search modes on a tiny real index: codes in step with SQL, exact re-rank, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmgen.data.sources import open_sources
from mmgen.errors import ConfigError, ManifestMismatchError
from mmgen.index.codes import hamming
from mmgen.index import IndexFolder
from mmgen.catalog import live_row_ids
from mmgen.indexer import Indexer, IndexOptions
from mmgen.search import Searcher
from mmgen.store.db import open_store
from mmgen.train.hasher import HasherConfig, train_hasher

TINY = {"steps": 15, "anchors": 16, "neighbours": 4, "hidden": 32, "progress": False, "device": "cpu"}


def index(ws, encoder, manifest: Path, **kw) -> object:
    store = open_store(ws.db_url)
    try:
        return Indexer(ws, store, encoder, IndexOptions(progress=False, **kw)).run(open_sources(str(manifest)))
    finally:
        store.close()


def searcher(ws) -> tuple[Searcher, object]:
    store = open_store(ws.db_url)
    return Searcher(ws, store, device="cpu"), store


def assert_codes_in_step(ws, hasher) -> None:
    """Per modality: the binary index holds exactly the live SQL rows, with the hasher's codes of their vectors."""
    store = open_store(ws.db_url)
    folder = IndexFolder.open(ws.index_dir("default"))
    try:
        for modality in ("image", "text"):
            live = np.sort(live_row_ids(store, 1, modality))
            ids, codes = folder.codes(modality).codes()
            order = np.argsort(ids)
            np.testing.assert_array_equal(ids[order], live)
            np.testing.assert_array_equal(codes[order], hasher.encode(folder.vectors(modality).get(live), modality))
            assert folder.codes_row_state(modality) == (len(live), int(live.max()))
    finally:
        store.close()


def test_index_with_hash_keeps_codes_in_step_through_add_and_remove(hash_ws, tiny_encoder) -> None:
    ws, manifest = hash_ws
    hasher = train_hasher(ws, HasherConfig(bits=32, name="h32", **TINY)).hasher
    rep = index(ws, tiny_encoder, manifest, hash="h32")
    assert rep.hasher == "h32" and rep.codes == {"image": 40, "text": 40} and rep.to_json()["codes"] == rep.codes
    assert_codes_in_step(ws, hasher)

    # remove five records and add two: a plain re-run (no --hash) keeps the recorded hasher's codes in step
    lines = manifest.read_text().splitlines()
    extra = [json.dumps({**json.loads(lines[0]), "id": f"new{i}", "text": f"a new drawing {i}"}) for i in range(2)]
    manifest.write_text("\n".join(lines[5:] + extra) + "\n")
    rep = index(ws, tiny_encoder, manifest, prune=True)
    assert (rep.added, rep.removed, rep.codes) == (2, 5, {"image": 37, "text": 37})
    assert_codes_in_step(ws, hasher)

    # a binary preset change rebuilds the codes from the vector files
    rep = index(ws, tiny_encoder, manifest, hash="h32", hash_preset="binary-hnsw32")
    assert "rebuilt" in rep.sync["text codes"] or rep.codes == {"image": 37, "text": 37}
    assert IndexFolder.open(ws.index_dir("default")).hash["preset"]["factory"] == "BHNSW32"


def test_search_modes_against_brute_force(hash_ws, tiny_encoder) -> None:
    ws, manifest = hash_ws
    hasher = train_hasher(ws, HasherConfig(bits=64, name="h64", **TINY)).hasher
    index(ws, tiny_encoder, manifest, hash="h64")
    s, store = searcher(ws)
    try:
        folder = s.folder
        live = np.sort(live_row_ids(store, s.index_id, "image"))
        images = folder.vectors("image").get(live)
        q = tiny_encoder.encode_text(["a red circle", "a blue square"])

        # codes: Hamming distances of the hits are the smallest possible, scores 1 - 2 d / B
        _, hits = s.search_vectors(q, to="image", k=5, mode="codes", query_modality="text")
        dist = hamming(hasher.encode(q, "text"), hasher.encode(images, "image"))
        for row, found in enumerate(hits):
            best = np.sort(dist[row])[:5]
            np.testing.assert_allclose([h.score for h in found], 1 - 2 * best / 64, atol=1e-6)

        # rerank with a short list as large as the index: exactly the float search
        _, exact = s.search_vectors(q, to="image", k=5)
        _, rer = s.search_vectors(q, to="image", k=5, mode="rerank", rerank=len(live), query_modality="text")
        for e, r in zip(exact, rer):
            assert [h.id for h in r] == [h.id for h in e]
            np.testing.assert_allclose([h.score for h in r], [h.score for h in e], atol=1e-5)
        # a short list of 10: hits come from it, exact scores, best first
        _, rer = s.search_vectors(q, to="image", k=5, mode="rerank", rerank=10, query_modality="text")
        assert all(np.all(np.diff([h.score for h in r]) <= 1e-6) for r in rer)

        # --where holds in both code modes; image queries search text codes
        for mode in ("codes", "rerank"):
            _, hits = s.search_vectors(q, to="image", k=8, where={"color": "red"}, mode=mode, query_modality="text")
            assert hits[0] and all(h.meta["color"] == "red" for h in hits[0])
        _, hits = s.search_vectors(images[:1], to="text", k=3, mode="codes", query_modality="image")
        assert len(hits[0]) == 3 and all(h.modality == "text" for h in hits[0])

        result = s.search(text="a red circle", k=3, mode="rerank", rerank=20)
        assert result.query["mode"] == "rerank" and result.query["rerank"] == 20 and result.query["hasher"] == "h64"
        with pytest.raises(ConfigError, match="does not apply"):
            s.search(text="a red circle", mode="codes", rerank=20)
        with pytest.raises(ConfigError, match="--mode must be"):
            s.search(text="a red circle", mode="fast")
    finally:
        store.close()


def test_stale_or_missing_codes_are_rebuilt_by_search(hash_ws, tiny_encoder) -> None:
    ws, manifest = hash_ws
    train_hasher(ws, HasherConfig(bits=32, name="h32", **TINY))
    index(ws, tiny_encoder, manifest, hash="h32")
    (ws.index_dir("default") / "image.codes.faiss").unlink()  # a cache: search rebuilds it from the vectors
    s, store = searcher(ws)
    try:
        _, hits = s.search_vectors(tiny_encoder.encode_text(["a red circle"]), to="image", k=4, mode="codes",
                                   query_modality="text")  # fmt: skip
        assert len(hits[0]) == 4
    finally:
        store.close()
    assert IndexFolder.open(ws.index_dir("default")).codes("image").count == 40


def test_mismatches_are_refused(hash_ws, tiny_encoder, tiny_clip, tmp_path, build_tiny_workspace) -> None:
    from mmgen.encoders import load_encoder

    ws, manifest = hash_ws
    s, store = searcher(ws)
    with pytest.raises(ConfigError, match="keeps no binary codes"):
        s.search(text="a red circle", mode="codes")
    store.close()
    with pytest.raises(ConfigError, match="--hash-preset"):
        index(ws, tiny_encoder, manifest, hash_preset="binary-flat")

    # a hasher trained on another encoder's embeddings
    other_ws, _ = build_tiny_workspace(tmp_path / "other", load_encoder(f"openclip:{tiny_clip.other_folder}", device="cpu"))
    train_hasher(other_ws, HasherConfig(bits=32, name="foreign", **TINY))
    shutil.copytree(other_ws.models_dir / "foreign", ws.models_dir / "foreign")
    with pytest.raises(ManifestMismatchError, match="trained on embeddings of"):
        index(ws, tiny_encoder, manifest, hash="foreign")

    # the index's hasher retrained at another width: search uses the kept version (h@1) while it exists,
    # refuses once it is removed; `index --hash` re-encodes
    train_hasher(ws, HasherConfig(bits=32, name="h", **TINY))
    index(ws, tiny_encoder, manifest, hash="h")
    train_hasher(ws, HasherConfig(bits=64, name="h", **TINY))
    s, store = searcher(ws)
    assert s.search(text="a red circle", mode="codes", record=False).hits
    assert s.hasher().bits == 32
    store.close()
    from mmgen.versions import remove_version

    remove_version(ws, "h@1", "hasher", force=True)
    s, store = searcher(ws)
    with pytest.raises(ManifestMismatchError, match="32-bit codes of hasher 'h'.*now 64-bit"):
        s.search(text="a red circle", mode="codes")
    store.close()
    with pytest.raises(ManifestMismatchError, match="retrained"):
        index(ws, tiny_encoder, manifest)  # a plain run refuses before doing any work
    rep = index(ws, tiny_encoder, manifest, hash="h")
    assert "rebuilt" in rep.sync["image codes"] or rep.codes["image"] == 40
    s, store = searcher(ws)
    assert len(s.search(text="a red circle", k=3, mode="codes").hits) == 3
    store.close()
