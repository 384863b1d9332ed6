"""FAISS index, vector files and index folders against brute-force ground truth on seeded data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmgen.errors import ManifestMismatchError, UnknownNameError, VectorIndexError
from mmgen.index import IndexFolder, list_presets, resolve_preset
from mmgen.index.faiss_index import FaissIndex
from mmgen.index.vectors import VectorFile

DIM = 16


def unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(base: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(q @ base.T), axis=1, kind="stable")[:, :k]]


def test_presets_are_discoverable_and_unknown_names_list_choices() -> None:
    presets = list_presets()
    assert {"flat", "hnsw32", "ivf1024-flat", "ivf4096-pq48"} <= set(presets)
    assert resolve_preset(None).factory == "SQfp16"  # flat-fp16, the default
    assert resolve_preset("IVF8,Flat").factory == "IVF8,Flat"
    with pytest.raises(UnknownNameError, match="flat"):
        resolve_preset("no-such-preset")


def test_workspace_preset_overrides(tmp_path) -> None:
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "mine.json").write_text(json.dumps({"factory": "HNSW8"}))
    assert resolve_preset("mine", tmp_path).factory == "HNSW8"


def test_vector_file_appends_durably_and_drops_torn_tail(tmp_path) -> None:
    vf = VectorFile(tmp_path / "v.f32", DIM)
    a, b = unit(5, 1), unit(3, 2)
    assert list(vf.append(a)) == [0, 1, 2, 3, 4]
    with open(vf.path, "ab") as fh:  # a killed writer left half a row
        fh.write(b"\x00" * (4 * DIM // 2))
    assert len(vf) == 5
    assert list(vf.append(b)) == [5, 6, 7]
    np.testing.assert_array_equal(vf.get(np.array([6, 0])), np.stack([b[1], a[0]]))
    with pytest.raises(ManifestMismatchError):
        VectorFile(vf.path, DIM + 1)
    with pytest.raises(VectorIndexError, match="shape"):
        vf.append(unit(2)[:, :4])


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF4,Flat"])
def test_search_matches_brute_force(factory: str) -> None:
    base, ids = unit(400, 3), np.arange(400, dtype=np.int64) * 7 + 11
    q = unit(20, 4)
    preset = resolve_preset(factory)
    preset = type(preset)(name=factory, factory=factory, search={"efSearch": 256, "nprobe": 4})
    index = FaissIndex(DIM, preset)
    if not index.is_trained:
        index.train(base)
    index.add(ids, base)
    _, got = index.search(q, 5)
    expected = brute_force(base, ids, q, 5)
    assert (got == expected).mean() >= (1.0 if factory == "Flat" else 0.95)


def test_remove_and_allowed_ids_filter() -> None:
    base, ids = unit(100, 5), np.arange(100, dtype=np.int64)
    index = FaissIndex(DIM, resolve_preset("flat"))
    index.add(ids, base)
    assert index.remove(np.array([0, 1, 2])) == 3
    assert index.count == 97 and not {0, 1, 2} & set(index.ids().tolist())
    allowed = np.array([10, 20, 30], dtype=np.int64)
    _, got = index.search(base[:2], 5, allowed_ids=allowed)
    assert set(got[got >= 0].ravel().tolist()) <= {10, 20, 30}
    np.testing.assert_array_equal(got[:, :3], brute_force(base[allowed], allowed, base[:2], 3))
    with pytest.raises(VectorIndexError, match="16-d"):
        index.search(unit(1)[:, :8], 3)


def test_too_few_vectors_to_train_is_a_clear_error() -> None:
    index = FaissIndex(DIM, resolve_preset("ivf1024-flat"))
    with pytest.raises(VectorIndexError, match="needs at least"):
        index.train(unit(50))


def test_bad_factory_string() -> None:
    with pytest.raises(VectorIndexError, match="invalid FAISS factory"):
        FaissIndex(DIM, resolve_preset("IVFxx,Flat"))


def make_folder(tmp_path, factory: str = "flat") -> IndexFolder:
    return IndexFolder.create(
        tmp_path / "ix", name="ix", encoder="enc:a", encoder_checksum="a" * 64, dim=DIM, preset=resolve_preset(factory)
    )


@pytest.mark.parametrize("factory", ["flat", "hnsw32"])
def test_folder_sync_save_load_round_trip(tmp_path, factory: str) -> None:
    folder = make_folder(tmp_path, factory)
    base = unit(60, 6)
    slots = folder.vectors("text").append(base)
    rep = folder.sync("text", slots[:50])
    assert rep.added == 50
    folder.save("text")
    rep = folder.sync("text", slots[10:])  # ten removed, ten added
    assert (rep.added, rep.removed) == (10, 10)
    folder.save("text")
    again = IndexFolder.open(folder.root)
    assert again.row_state("text") == (50, 59)
    assert sorted(again.faiss("text").ids().tolist()) == list(range(10, 60))
    _, got = again.faiss("text").search(base[30:31], 1)
    assert got[0, 0] == 30


def test_corrupt_faiss_file_is_rebuilt_from_vectors(tmp_path) -> None:
    folder = make_folder(tmp_path)
    slots = folder.vectors("image").append(unit(30, 7))
    folder.sync("image", slots)
    folder.save("image")
    path = folder.root / "image.faiss"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # half-written
    again = IndexFolder.open(folder.root)
    rep = again.sync("image", slots)
    assert rep.added == 30 and "cannot read FAISS index" in rep.reason
    assert again.faiss("image").count == 30


def test_manifest_mismatch_is_refused(tmp_path) -> None:
    folder = make_folder(tmp_path)
    folder.check(encoder="enc:a", encoder_checksum="a" * 64, dim=DIM)
    with pytest.raises(ManifestMismatchError, match="built with encoder enc:a"):
        folder.check(encoder="enc:b", encoder_checksum="b" * 64, dim=DIM)
    with pytest.raises(ManifestMismatchError, match="16-d"):
        folder.check(dim=DIM * 2)
    with pytest.raises(VectorIndexError, match="already exists"):
        make_folder(tmp_path)
    with pytest.raises(VectorIndexError, match="no index"):
        IndexFolder.open(tmp_path / "nothing")


def test_switching_preset_rebuilds_from_stored_vectors(tmp_path) -> None:
    folder = make_folder(tmp_path)
    base = unit(200, 8)
    slots = folder.vectors("text").append(base)
    folder.sync("text", slots)
    folder.set_preset(resolve_preset("IVF4,Flat"))
    rep = folder.sync("text", slots)
    assert rep.rebuilt and folder.faiss("text").count == 200
    assert "IVF" in IndexFolder.open(folder.root).manifest["factory"]


def test_both_index_kinds_share_one_interface_and_the_txtai_verbs() -> None:
    from mmgen.index.base import VectorIndex
    from mmgen.index.binary import BinaryIndex
    from mmgen.index.codes import pack_codes
    from mmgen.index.faiss_index import FaissIndex
    from mmgen.index.presets import resolve_preset

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    codes = pack_codes(rng.normal(size=(20, 32)) > 0)
    float_index = FaissIndex(8, resolve_preset("flat"))
    binary_index = BinaryIndex(32, resolve_preset("binary-flat", binary=True))
    for index, data in ((float_index, vectors), (binary_index, codes)):
        assert isinstance(index, VectorIndex)
        index.build(np.arange(10), data[:10])
        index.append(np.arange(10, 20), data[10:])
        assert index.count == 20
        index.upsert(np.array([3, 25]), data[[0, 1]])  # 3 replaced, 25 added
        assert index.count == 21 and set(index.ids().tolist()) == set(range(20)) | {25}
        _, found = index.search(data[[0]], 2)
        assert set(found[0].tolist()) == {0, 3}  # row 3 now holds row 0's data
        assert index.delete(np.array([25, 99])) == 1 and index.count == 20


def test_removing_from_an_ivf_index_keeps_the_other_ids_right() -> None:
    # IDMap2 compacts its id map on removal but IVF lists keep their internal ids: they are renumbered.
    base, ids = unit(400, 9), np.arange(400, dtype=np.int64) * 3
    index = FaissIndex(DIM, type(resolve_preset("flat"))(name="ivf", factory="IVF4,Flat", search={"nprobe": 4}))
    index.train(base)
    index.add(ids, base)
    assert index.remove(ids[:200:2]) == 100
    kept = np.setdiff1d(np.arange(400), np.arange(0, 200, 2))
    _, got = index.search(base[kept], 1)
    np.testing.assert_array_equal(got[:, 0], ids[kept])


def test_a_kept_vector_file_follows_growth_and_replacement(tmp_path) -> None:
    """IndexFolder keeps one VectorFile per modality for its memory map; it remaps when the file grows or
    is replaced by another file (a rewrite by rename), never answering from the old map."""
    folder = make_folder(tmp_path)
    vectors = folder.vectors("image")
    first = np.eye(DIM, dtype=np.float32)[:3]
    vectors.append(first)
    assert folder.vectors("image") is vectors
    np.testing.assert_array_equal(vectors.get(np.array([2])), first[2:])
    other = VectorFile(tmp_path / "other.f32", DIM)
    other.append(first[::-1].copy())
    (tmp_path / "other.f32").replace(vectors.path)  # same row count, new inode
    np.testing.assert_array_equal(folder.vectors("image").get(np.array([0])), first[2:])
    folder.vectors("image").append(np.ones((1, DIM), dtype=np.float32))
    assert len(folder.vectors("image").get(np.arange(4))) == 4


def test_the_fp16_index_gives_a_gpu_copy_source_that_scores_its_rounded_vectors() -> None:
    """FAISS has no GPU flat scalar quantiser, so a GPU copy of `flat-fp16` is made from a float Flat of the
    decoded vectors: same ids, same scores as the CPU scan (run here on CPU, the copy's source itself)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.choice(10_000, 300, replace=False).astype(np.int64)
    fp16 = FaissIndex(DIM, resolve_preset("flat-fp16"))
    fp16.add(ids, x)
    source = fp16.gpu_source()
    assert source is not fp16.index and source.ntotal == 300
    want_s, want_i = fp16.search(x[:5], 7)
    got_s, got_i = source.search(x[:5], 7)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, atol=1e-6)
    flat = FaissIndex(DIM, resolve_preset("flat"))
    assert flat.gpu_source() is flat.index  # every other index goes to the GPU as it is


@pytest.mark.gpu
def test_an_fp16_index_searched_on_a_gpu_answers_as_on_the_cpu() -> None:
    from mmgen.devices import faiss_gpu_count

    if faiss_gpu_count() == 0:
        pytest.skip("faiss sees no GPU")
    x = unit(2000, seed=5)
    on_gpu, on_cpu = FaissIndex(DIM, resolve_preset("flat-fp16")), FaissIndex(DIM, resolve_preset("flat-fp16"))
    for index in (on_gpu, on_cpu):
        index.add(np.arange(2000, dtype=np.int64), x)
    got_s, got_i = on_gpu.search(x[:50], 10)  # every query at once: FAISS's GPU copy
    assert on_gpu._gpu_index is not None and on_gpu._gpu_index is not on_gpu.index
    want_s, want_i = on_cpu.index.search(x[:50], 10)
    np.testing.assert_allclose(got_s, want_s, atol=1e-5)
    assert (got_i == want_i).mean() > 0.99  # near-equal scores may swap places


def test_the_largest_norm_is_kept_beside_the_vector_file_and_never_trusted_for_another_file(tmp_path) -> None:
    path = tmp_path / "v.f32"
    rows = unit(20, seed=6)
    VectorFile(path, DIM).append(rows)
    sidecar = path.with_name("v.f32.maxnorm")
    assert json.loads(sidecar.read_text())["rows"] == 20
    assert VectorFile(path, DIM).max_norm() == pytest.approx(1.0, abs=1e-6)  # a new reader starts from it
    older = sidecar.read_bytes()
    VectorFile(path, DIM).append(3 * rows[:2])
    assert json.loads(sidecar.read_text())["rows"] == 22
    sidecar.write_bytes(older)  # as if killed between the append and the sidecar: the rows past it are read
    assert VectorFile(path, DIM).max_norm() == pytest.approx(3.0, abs=1e-5)
    assert json.loads(sidecar.read_text())["rows"] == 22

    kept = sidecar.read_bytes()
    path.unlink()
    VectorFile(path, DIM).append(np.concatenate([7 * rows[:1], rows]))  # another file under the same name
    sidecar.write_bytes(kept)  # with the first file's sidecar: its first rows differ, so it is not believed
    assert VectorFile(path, DIM).max_norm() == pytest.approx(7.0, abs=1e-5)
