"""Indexing throughput and search latency on the demo corpus.

    python benchmarks/bench_index_search.py --workspace build/bench [--sources emoji openclipart]
        [--encoder st:all-MiniLM-L6-v2] [--queries 200]

Builds a fresh workspace (deleted first), indexes the sources, and prints:
- indexing throughput in items/s, with the time split into hash, decode, encode, write, faiss;
- image decoding throughput (images/s) per source, with the indexer's threaded reader;
- search latency over N seeded queries (captions of indexed items, lightly reworded): p50/p95
  one query at a time (encode + FAISS + SQL join + recording the search), and batched
  (all queries encoded and searched in one call, per-query amortised).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgen.indexer import IndexOptions, index_sources  # noqa: E402
from mmgen.workspace import Workspace  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    """q-th percentile of a list of numbers."""
    return float(np.percentile(np.asarray(values), q))


def decode_images(sources: list[str], sample: int, seed: int) -> None:
    """Decode a seeded sample of each source's images with the indexer's threaded reader: images/s."""
    from concurrent.futures import ThreadPoolExecutor

    from mmgen.data.images import load_image
    from mmgen.data.sources import open_sources
    from mmgen.devices import cpu_threads
    from mmgen.errors import ImageLoadError

    def load(path: str) -> bool:
        try:
            load_image(path, 256)
            return True
        except ImageLoadError:
            return False

    for spec in sources:
        for src in open_sources(spec):
            paths = [r.image for r in src.records() if r.image and not r.error]
            paths = random.Random(seed).sample(paths, min(sample, len(paths)))
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=cpu_threads()) as pool:
                ok = sum(pool.map(load, paths))
            seconds = time.perf_counter() - started
            print(f"{src.corpus:14s} {len(paths):6d} images {seconds:6.1f} s {len(paths) / seconds:8.1f} images/s"
                  f"  ({len(paths) - ok} failed)")


def main() -> None:
    """Run the benchmark and print its tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=Path("build/bench"))
    ap.add_argument("--sources", nargs="+", default=["emoji", "openclipart"])
    ap.add_argument("--encoder", default=None, help="default: st:all-MiniLM-L6-v2")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--decode-sample", type=int, default=2000, help="images decoded per source")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args()

    if args.workspace.exists():
        shutil.rmtree(args.workspace)
    ws = Workspace.resolve(args.workspace)
    print(f"# mmgen benchmark: {' '.join(sys.argv)}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")

    totals = {"items": 0, "seconds": 0.0}
    stages: dict[str, float] = {}
    print("\n## Indexing (fresh workspace)")
    print(f"{'source':14s} {'items':>7s} {'seconds':>8s} {'items/s':>8s}  stages (s)")
    encoder = args.encoder
    for spec in args.sources:
        opts = IndexOptions(encoder=encoder, batch_size=args.batch_size, progress=False)
        started = time.perf_counter()
        report = index_sources(spec, ws, opts)
        seconds = time.perf_counter() - started
        encoder = report.encoder
        n = report.added + report.updated
        totals["items"] += n
        totals["seconds"] += seconds
        for k, v in report.timings.items():
            stages[k] = stages.get(k, 0.0) + v
        split = ", ".join(f"{k} {v:.1f}" for k, v in report.timings.items())
        print(f"{spec:14s} {n:7d} {seconds:8.1f} {n / seconds:8.1f}  {split}  (failed {report.failed_count})")
    rate = totals["items"] / totals["seconds"]
    print(f"{'total':14s} {totals['items']:7d} {totals['seconds']:8.1f} {rate:8.1f}  "
          + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    print("(seconds include opening the store and loading the encoder; stages: hash = content hashing, "
          "decode = waiting for image decoding, encode = model, write = vector files + SQL, faiss = sync and save)")

    print("\n## Image decoding (the reader stage of an image index; model-independent)")
    decode_images(args.sources, args.decode_sample, args.seed)

    from mmgen.search import Searcher
    from mmgen.store.db import open_store
    from mmgen.store.models import Item
    from sqlalchemy import select

    store = open_store(ws.db_url)
    searcher = Searcher(ws, store)
    with store.session() as s:
        texts = sorted({t for t in s.scalars(select(Item.text).where(Item.text.is_not(None)))})
    rng = random.Random(args.seed)
    queries = [f"{t.split(',')[0]}" for t in rng.sample(texts, min(args.queries, len(texts)))]

    searcher.search(text=queries[0], k=args.k, record=False)  # warm-up: FAISS load, first encode
    single = []
    for q in queries:
        started = time.perf_counter()
        searcher.search(text=q, k=args.k)
        single.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    vecs = searcher.encode_queries(texts=queries)
    searcher.search_vectors(vecs, k=args.k)
    batched_ms = (time.perf_counter() - started) * 1000
    enc_started = time.perf_counter()
    searcher.encode_queries(texts=queries)
    encode_ms = (time.perf_counter() - enc_started) * 1000
    store.close()

    print(f"\n## Search ({len(queries)} queries, k={args.k}, index of {searcher.folder.faiss('text').count} text vectors, "
          f"{searcher.folder.preset.factory})")
    print(f"one at a time: p50 {percentile(single, 50):.1f} ms, p95 {percentile(single, 95):.1f} ms "
          f"(encode + FAISS + SQL join + recording)")
    print(f"batched:       {batched_ms:.0f} ms for {len(queries)} queries = {batched_ms / len(queries):.2f} ms/query "
          f"(of which encoding {encode_ms / len(queries):.2f} ms/query)")
    if args.json:
        print(json.dumps({
            "index_items": totals["items"], "index_seconds": totals["seconds"], "items_per_s": rate,
            "stages_s": stages, "search_p50_ms": percentile(single, 50), "search_p95_ms": percentile(single, 95),
            "batched_ms_per_query": batched_ms / len(queries),
        }, indent=2))


if __name__ == "__main__":
    main()
