"""`mmgen.devices`: device choice and the FAISS thread count of small query batches."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from mmgen.devices import FAISS_SMALL_BATCH, faiss_threads_for, torch_device
from mmgen.errors import ConfigError
from mmgen.index.faiss_index import FaissIndex
from mmgen.index.presets import resolve_preset


def test_small_batches_search_on_one_thread_and_the_count_comes_back() -> None:
    before = faiss.omp_get_max_threads()
    with faiss_threads_for(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
    with faiss_threads_for(FAISS_SMALL_BATCH):
        assert faiss.omp_get_max_threads() == before
    with pytest.raises(RuntimeError), faiss_threads_for(1):
        raise RuntimeError("a failed search")
    assert faiss.omp_get_max_threads() == before


def test_the_thread_count_is_per_thread() -> None:
    """OpenMP keeps the count per thread: a search thread on one thread leaves another thread's count alone."""
    before = faiss.omp_get_max_threads()
    inside, seen = threading.Event(), []

    def other() -> None:
        inside.wait(10)
        seen.append(faiss.omp_get_max_threads())

    t = threading.Thread(target=other)
    t.start()
    with faiss_threads_for(1):
        inside.set()
        t.join(10)
    assert seen == [before]


def test_one_query_finds_what_a_large_batch_finds() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = FaissIndex(32, resolve_preset("flat"))
    index.add(np.arange(2000, dtype=np.int64), x)
    queries = x[:FAISS_SMALL_BATCH]
    _, batch_ids = index.search(queries, 5)  # at the threshold: FAISS's own threads
    for q in range(3):
        _, ids = index.search(queries[q : q + 1], 5)
        assert ids[0].tolist() == batch_ids[q].tolist()


def test_unknown_device_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="device must be"):
        torch_device("tpu")
    assert torch_device("cpu") == "cpu"
