"""The one place that chooses compute devices and thread counts."""

from __future__ import annotations

import os


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


def faiss_gpu_count() -> int:
    """Number of GPUs faiss can use (0 for faiss-cpu builds)."""
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
