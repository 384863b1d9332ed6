"""BinaryIndex (flat codes addressed by row id; IndexBinaryIDMap for graphs and IVF) and the binary presets."""

from __future__ import annotations

import numpy as np
import pytest

from mmgen.errors import ManifestMismatchError, UnknownNameError, VectorIndexError
from mmgen.index.binary import BinaryIndex
from mmgen.index.codes import hamming
from mmgen.index import list_presets, resolve_preset


def codes(n: int, seed: int, nbytes: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, nbytes), dtype=np.uint8)


def brute(db: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Sorted distances of the k nearest (ties make ids ambiguous, distances are not)."""
    return np.sort(hamming(q, db), axis=1)[:, :k]


def test_binary_presets_are_listed_and_kept_apart_from_float_ones() -> None:
    presets = list_presets()
    assert {"binary-flat", "binary-hnsw32", "binary-ivf1024"} <= set(presets)
    assert presets["binary-flat"].binary and not presets["flat"].binary
    assert resolve_preset(None, binary=True).factory == "BFlat"
    assert resolve_preset("BIVF8", binary=True).factory == "BIVF8"
    with pytest.raises(UnknownNameError, match="binary-flat"):
        resolve_preset("flat", binary=True)
    with pytest.raises(UnknownNameError, match="flat"):
        resolve_preset("binary-flat")  # a binary preset is no float preset


@pytest.mark.parametrize("name", ["binary-flat", "binary-hnsw32", "BIVF8"])
def test_search_matches_brute_force(name: str) -> None:
    preset = resolve_preset(name, binary=True)
    preset = type(preset)(**{**preset.__dict__, "search": {"efSearch": 256, "nprobe": 8}})
    db, ids, q = codes(500, 1), np.arange(500, dtype=np.int64) * 5 + 3, codes(20, 2)
    index = BinaryIndex(64, preset)
    if not index.is_trained:
        index.train(db)
    index.add(ids, db)
    dist, got = index.search(q, 10)
    np.testing.assert_array_equal(dist, np.take_along_axis(hamming(q, db), (got - 3) // 5, axis=1))
    np.testing.assert_array_equal(dist, brute(db, ids, q, 10))


def test_remove_filter_and_save_load(tmp_path) -> None:
    db, ids = codes(200, 3), np.arange(200, dtype=np.int64)
    index = BinaryIndex(64, resolve_preset(None, binary=True))
    index.add(ids, db)
    assert index.remove(np.array([0, 1, 2])) == 3 and index.count == 197
    allowed = np.array([10, 20, 30, 40], dtype=np.int64)
    dist, got = index.search(db[:2], 3, allowed_ids=allowed)
    assert set(got.ravel().tolist()) <= set(allowed.tolist())
    np.testing.assert_array_equal(dist, brute(db[allowed], allowed, db[:2], 3))
    path = tmp_path / "c.codes.faiss"
    index.save(path)
    assert path.stat().st_size < 200 * 8 + 100  # 8 bytes of code per slot, no ids, a small header
    again = BinaryIndex.load(path, 64, index.preset)
    assert again.count == 197 and sorted(again.ids().tolist()) == list(range(3, 200))
    ids_back, codes_back = again.codes()
    np.testing.assert_array_equal(codes_back[np.argsort(ids_back)], db[3:])
    _, top = again.search(db[:3], 5)
    assert not set(top.ravel().tolist()) & {0, 1, 2}  # removed slots are never returned
    with pytest.raises(ManifestMismatchError, match="64-bit codes, the hasher makes 128-bit"):
        BinaryIndex.load(path, 128, index.preset)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(VectorIndexError, match="cannot read"):
        BinaryIndex.load(path, 64, index.preset)


def test_flat_codes_are_addressed_by_row_id_without_storing_ids(tmp_path) -> None:
    index = BinaryIndex(64, resolve_preset(None, binary=True))
    assert index.slotted
    db = codes(10, 8)
    index.add(np.array([7, 2, 4]), db[:3])  # out of order, with gaps
    assert index.ids().tolist() == [2, 4, 7] and index.count == 3 and index.index.ntotal == 8
    dist, got = index.search(db[:3], 3)
    assert got[:, 0].tolist() == [7, 2, 4] and (dist[:, 0] == 0).all()
    assert set(got.ravel().tolist()) <= {2, 4, 7}  # gap slots (zero codes) are never hits
    index.add(np.array([0, 9]), db[3:5])  # a dead slot refilled, and one beyond the end
    assert index.ids().tolist() == [0, 2, 4, 7, 9]
    with pytest.raises(VectorIndexError, match="already hold codes"):
        index.add(np.array([4]), db[5:6])
    assert index.remove(np.array([4, 4, 5, 99])) == 1  # only live ids count
    _, got = index.search(db[2:3], 5)
    assert 4 not in got and sorted(got[got >= 0].tolist()) == [0, 2, 7, 9]
    assert index.resident_bytes_per_item == (10 * 8 + 8 * 6) / 4
    path = tmp_path / "i.codes.faiss"
    index.save(path)
    dead = path.with_name(path.name + ".dead.npy")
    assert dead.exists()
    again = BinaryIndex.load(path, 64, index.preset)
    assert again.ids().tolist() == [0, 2, 7, 9]
    dead.write_bytes(b"garbage")
    with pytest.raises(VectorIndexError, match="dead-slot list"):
        BinaryIndex.load(path, 64, index.preset)
    assert again.remove(np.array([0, 2, 7, 9])) == 4 and again.index.ntotal == 0  # empty: zero codes dropped
    again.save(path)
    assert not dead.exists()
    BinaryIndex.delete_files(path)
    assert not path.exists()


def test_hnsw_filters_after_searching_and_rebuilds_instead_of_removing() -> None:
    db, ids = codes(300, 4), np.arange(300, dtype=np.int64)
    index = BinaryIndex(64, resolve_preset("binary-hnsw32", binary=True))
    index.add(ids, db)
    allowed = np.arange(0, 300, 2)
    _, got = index.search(db[:5], 5, allowed_ids=allowed)
    assert set(got[got >= 0].ravel().tolist()) <= set(allowed.tolist())
    assert not index.supports_remove
    with pytest.raises(VectorIndexError, match="cannot remove"):
        index.remove(np.array([1]))


def test_bad_input_is_refused_clearly() -> None:
    index = BinaryIndex(64, resolve_preset(None, binary=True))
    with pytest.raises(VectorIndexError, match="32 bits wide, expected 64"):
        index.add(np.arange(3), codes(3, 5, nbytes=4))
    with pytest.raises(VectorIndexError, match="2 ids for 3 codes"):
        index.add(np.arange(2), codes(3, 5))
    _, empty = index.search(codes(1, 6), 4)
    assert (empty == -1).all()
    ivf = BinaryIndex(64, resolve_preset("binary-ivf1024", binary=True))
    with pytest.raises(VectorIndexError, match="needs at least"):
        ivf.train(codes(100, 7))
    with pytest.raises(VectorIndexError, match="invalid FAISS binary factory"):
        BinaryIndex(64, resolve_preset("BIVFxx", binary=True))
