"""The one place that chooses compute devices and thread counts."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

# Below this many queries a FAISS search runs on one thread: OpenMP's start-up and hand-off cost more than
# the scan of a query or two (one query over 20k x 384 floats: 1.0 ms on one thread, 3.8 ms on two, 2 cores).
FAISS_SMALL_BATCH = 20


def torch_device(preference: str = "auto") -> str:
    """Return a torch device string: `cuda` when available and wanted, else `cpu`."""
    if preference not in ("auto", "cpu", "cuda") and not preference.startswith("cuda:"):
        from mmgen.errors import ConfigError

        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, not {preference!r}")
    if preference == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda" if preference == "auto" else preference
    if preference != "auto":
        from mmgen.errors import ConfigError

        raise ConfigError(f"device {preference!r} requested but torch sees no CUDA device")
    return "cpu"


@functools.cache
def faiss_gpu_count() -> int:
    """Number of GPUs faiss can use (0 for faiss-cpu builds); asked once per process (every search asks)."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def cpu_threads() -> int:
    """Threads for CPU work: `MMGEN_THREADS` or the number of usable cores."""
    env = os.environ.get("MMGEN_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def faiss_threads_for(n_queries: int) -> Iterator[None]:
    """One FAISS thread while a batch of fewer than FAISS_SMALL_BATCH queries is searched.

    OpenMP's thread count is a per-thread setting, so a server's other threads are not affected."""
    if n_queries >= FAISS_SMALL_BATCH:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
