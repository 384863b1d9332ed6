"""Packed codes and Hamming k-NN: bit layout against FAISS, distances and neighbours against brute force."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from mmgen.errors import ConfigError, VectorIndexError
from mmgen.index.codes import (
    check_bits,
    choose_backend,
    code_similarity,
    hamming,
    hamming_knn,
    pack_codes,
    torch_hamming_knn,
    unpack_codes,
)


def random_codes(n: int, nbytes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, nbytes), dtype=np.uint8)


def test_pack_layout_is_faiss_layout() -> None:
    """Bit i of a code is bit i % 8 of byte i // 8, as FAISS's IndexLSH writes it."""
    x = np.random.default_rng(0).standard_normal((50, 64)).astype(np.float32)
    lsh = faiss.IndexLSH(64, 64, False, False)  # no rotation, thresholds 0: the code is sign(x)
    np.testing.assert_array_equal(pack_codes(x > 0), lsh.sa_encode(x))
    np.testing.assert_array_equal(unpack_codes(pack_codes(x > 0)), (x > 0).astype(np.uint8))
    assert pack_codes(np.eye(8, dtype=bool))[:, 0].tolist() == [1, 2, 4, 8, 16, 32, 64, 128]


def test_hamming_matches_bit_counting() -> None:
    a, b = random_codes(7, 8, 1), random_codes(9, 8, 2)
    expected = (unpack_codes(a)[:, None, :] != unpack_codes(b)[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(hamming(a, b), expected)
    np.testing.assert_allclose(code_similarity(np.array([0, 32, 64]), 64), [1.0, 0.0, -1.0])
    with pytest.raises(VectorIndexError, match="64-bit codes with 32-bit"):
        hamming(a, random_codes(2, 4, 3))


@pytest.mark.parametrize("nbytes", [4, 8, 16, 32])
def test_torch_popcount_search_matches_faiss(nbytes: int) -> None:
    db, q = random_codes(3000, nbytes, 4), random_codes(40, nbytes, 5)
    index = faiss.IndexBinaryFlat(nbytes * 8)
    index.add(db)
    want_d, want_i = index.search(q, 20)
    got_d, got_i = torch_hamming_knn(q, db, 20, device="cpu")
    np.testing.assert_array_equal(got_d, want_d)  # the same distances, in order
    brute = hamming(q, db)
    np.testing.assert_array_equal(np.take_along_axis(brute, got_i, axis=1), got_d)  # ids carry those distances
    # where a distance is not tied at the cut-off, both return the same set of ids
    for row in range(len(q)):
        below = got_d[row] < got_d[row, -1]
        assert set(got_i[row][below]) == set(want_i[row][want_d[row] < want_d[row, -1]])
    # torch breaks ties by position: the order is fully determined
    key = brute * len(db) + np.arange(len(db))[None, :]
    np.testing.assert_array_equal(got_i, np.argsort(key, axis=1, kind="stable")[:, :20])


def test_knn_pads_when_k_exceeds_the_database() -> None:
    db, q = random_codes(3, 8, 6), random_codes(2, 8, 7)
    d, i = torch_hamming_knn(q, db, 5, device="cpu")
    assert (i[:, 3:] == -1).all() and sorted(i[0, :3].tolist()) == [0, 1, 2]
    d2, _ = hamming_knn(q, db, 3, device="cpu")
    np.testing.assert_array_equal(np.sort(d2, axis=1), np.sort(d[:, :3], axis=1))


def test_backend_choice_and_bad_input() -> None:
    assert choose_backend("cpu") == "faiss-cpu"
    assert choose_backend("auto") in ("faiss-cpu", "faiss-gpu", "torch:cuda")
    with pytest.raises(ConfigError, match="32, 64, 128, 256"):
        check_bits(48)
    with pytest.raises(VectorIndexError, match="uint8"):
        hamming_knn(np.zeros((1, 8), np.float32), random_codes(3, 8, 0), 1)
    with pytest.raises(VectorIndexError, match="64-bit codes, the database 32-bit"):
        hamming_knn(random_codes(1, 8, 0), random_codes(3, 4, 0), 1)
    with pytest.raises(VectorIndexError, match="multiple of 8"):
        pack_codes(np.ones((2, 12), bool))


@pytest.mark.gpu
def test_cuda_paths_match_cpu() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    db, q = random_codes(5000, 8, 8), random_codes(30, 8, 9)
    cpu_d, cpu_i = torch_hamming_knn(q, db, 10, device="cpu")
    gpu_d, gpu_i = torch_hamming_knn(q, db, 10, device="cuda")
    np.testing.assert_array_equal(cpu_d, gpu_d)
    np.testing.assert_array_equal(cpu_i, gpu_i)
    auto_d, _ = hamming_knn(q, db, 10, device="auto")
    np.testing.assert_array_equal(auto_d, cpu_d)


def test_asymmetric_prune_ranks_candidates_by_soft_code_agreement() -> None:
    from mmgen.index.codes import asymmetric_prune

    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2, (30, 64))
    codes = pack_codes(bits)
    soft = np.tanh(rng.normal(size=(3, 64))).astype(np.float32)
    candidates = np.array([rng.permutation(30)[:12] for _ in range(3)])
    candidates[2, 5:] = -1  # a short list that ran out
    kept = asymmetric_prune(soft, candidates, codes, 4)
    for row in range(3):
        cand = candidates[row][candidates[row] >= 0]
        scores = (2 * bits[cand] - 1) @ soft[row]
        assert kept[row].tolist() == cand[np.argsort(-scores, kind="stable")[:4]].tolist()
    with pytest.raises(VectorIndexError, match="do not fit"):
        asymmetric_prune(soft[:, :32], candidates, codes, 4)
