"""GPU against CPU on the same data, one JSON report (run by benchmarks/gpu_check.sh on a GPU machine).

Times, on seeded synthetic data shaped like the demo's:
- text encoding with `st:all-MiniLM-L6-v2` (5,000 captions), CPU and CUDA;
- image encoding with a small open_clip joint model built locally (2,000 random 64x64 images);
- exact top-10 search over 200k 384-d vectors for 1,000 queries: FAISS on CPU, FAISS on GPU
  where faiss has GPUs, else torch matrix products on CUDA (`mmgen.index.knn.exact_knn`);
- Hamming top-10 over 1M 64-bit codes (`mmgen.index.codes.hamming_knn`: FAISS GPU, torch popcount, CPU).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time(fn, repeat: int = 3) -> float:
    fn()  # warm-up (CUDA kernels, caches)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    """Run the timings and print the JSON report (also written to argv[1] if given)."""
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    import torch

    from mmgen.devices import faiss_gpu_count
    from mmgen.encoders.factory import load_encoder
    from mmgen.index.codes import hamming_knn, pack_codes
    from mmgen.index.knn import exact_knn

    rng = np.random.default_rng(0)
    report: dict[str, object] = {
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "faiss_gpus": faiss_gpu_count(),
    }
    texts = [f"a picture of thing number {i} in colour {i % 17}" for i in range(5000)]
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        enc = load_encoder("st:all-MiniLM-L6-v2", device=device)
        report[f"text_encode_{device}_items_s"] = len(texts) / _time(lambda e=enc: e.encode_text(texts), 2)
    db = rng.normal(size=(200_000, 384)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:1000] + 0.01 * rng.normal(size=(1000, 384)).astype(np.float32)
    import faiss

    flat = faiss.IndexFlatIP(384)
    flat.add(db)
    report["exact_search_faiss_cpu_qps"] = 1000 / _time(lambda: flat.search(q, 10))
    if faiss_gpu_count() > 0:
        gpu = faiss.index_cpu_to_all_gpus(flat)
        report["exact_search_faiss_gpu_qps"] = 1000 / _time(lambda: gpu.search(q, 10))
    if torch.cuda.is_available():
        report["exact_search_torch_cuda_qps"] = 1000 / _time(lambda: exact_knn(q, db, 10, device="cuda"))
    codes = pack_codes(rng.normal(size=(1_000_000, 64)) > 0)
    qc = codes[:1000]
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        report[f"hamming_search_{device}_qps"] = 1000 / _time(lambda d=device: hamming_knn(qc, codes, 10, device=d))
    out = json.dumps(report, indent=2)
    print(out)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(out, encoding="utf-8")


if __name__ == "__main__":
    main()
