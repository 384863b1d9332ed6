"""Binary codes at 1M items: build time, resident memory and queries/s of exact float search vs codes vs codes + re-rank.

    python benchmarks/bench_hashing_scale.py --workspace /tmp/hash/ws --hasher ae64 \\
        [--index default] [--items 1000000] [--queries 1000] [--rerank 100] [--scratch /tmp/hash/bench]

Database: the index's image vectors plus seeded Gaussian perturbations of them (renormalised) up
to --items rows, written once to an mmgen vector file in --scratch (1.5 GB at 1M x 384-d) and
memory-mapped from there. Queries: a seeded sample of the index's text vectors (text -> image,
the cross-modal direction the hasher serves). One run, side by side:

- float:  FAISS `IndexFlatIP` over every vector (RAM holds all floats);
- codes:  the hasher's packed codes in a FAISS binary flat index, addressed by row id (RAM holds
          B/8 bytes per item and no ids);
- rerank: the codes' Hamming short list of C, re-scored exactly from the memory-mapped vector file.

Memory is the growth of the process's anonymous resident memory (`RssAnon` in /proc/self/status),
so pages of the memory-mapped vector file (cache the kernel can drop) are reported apart
(`RssFile`). Recall@10 of codes and re-rank against the exact float search is printed too.
Run under load, timings vary; the memory and recall figures do not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHUNK = 50_000


def rss() -> dict[str, int]:
    """Anonymous and file-backed resident memory of this process, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def mib(n: float) -> str:
    """Bytes as MiB, right-aligned."""
    return f"{n / 2**20:8.1f} MiB"


def read_rows(path: Path, start: int, count: int, dim: int) -> np.ndarray:
    """Rows of a vector file read into a private array (bulk passes; no mapping left resident)."""
    return np.fromfile(path, dtype=np.float32, count=count * dim, offset=64 + 4 * start * dim).reshape(count, dim)


def build_database(path: Path, base: np.ndarray, items: int, noise: float, seed: int) -> Any:
    """The vector file of `items` rows: `base`, then perturbed copies (x + noise * g / sqrt(d), renormalised)."""
    from mmgen.index.vectors import VectorFile

    vf = VectorFile(path, base.shape[1])
    if len(vf) == items:
        return vf
    path.unlink(missing_ok=True)
    vf = VectorFile(path, base.shape[1])
    rng = np.random.default_rng(seed)
    vf.append(base[:items])
    while len(vf) < items:
        n = min(CHUNK, items - len(vf))
        x = base[rng.integers(0, len(base), n)] + noise * rng.standard_normal((n, base.shape[1]), dtype=np.float32) / np.sqrt(base.shape[1])
        vf.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return vf


def main() -> None:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--index", default="default")
    ap.add_argument("--hasher", required=True, help="a hasher trained on the index (mmgen train hasher)")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rerank", type=int, default=100)
    ap.add_argument("--noise", type=float, default=0.5, help="norm of the perturbation before renormalising")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/mmgen-bench-hashing"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import faiss

    from mmgen.index.binary import BinaryIndex
    from mmgen.hashing.data import load_index_vectors
    from mmgen.hashing.model import load_hasher
    from mmgen.index.faiss_index import FaissIndex
    from mmgen.index.presets import resolve_preset
    from mmgen.search import rerank_exact
    from mmgen.store.db import open_store
    from mmgen.workspace import Workspace

    print(f"# mmgen hashing scale benchmark: {' '.join(sys.argv)}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__}, "
          f"threads {faiss.omp_get_max_threads()}; timings taken on a shared, loaded machine")
    ws = Workspace.resolve(args.workspace)
    store = open_store(ws.db_url)
    try:
        data = load_index_vectors(ws, store, args.index)
    finally:
        store.close()
    hasher = load_hasher(args.hasher, ws.models_dir)
    hasher.check_index(index=args.index, encoder=data.encoder, encoder_checksum=data.encoder_checksum, dim=data.dim)
    rng = np.random.default_rng(args.seed)
    texts = data.modalities["text"].vectors
    queries = np.ascontiguousarray(texts[rng.choice(len(texts), min(args.queries, len(texts)), replace=False)])
    base = data.modalities["image"].vectors
    del data

    args.scratch.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    vf = build_database(args.scratch / f"db-{args.items}-{args.seed}.f32", base, args.items, args.noise, args.seed)
    print(f"database: {len(vf)} image vectors ({base.shape[0]} real + perturbed copies), "
          f"{vf.path.stat().st_size / 2**30:.2f} GiB on disk, written in {time.perf_counter() - started:.0f} s")
    ids = np.arange(len(vf), dtype=np.int64)
    results: dict[str, dict[str, float]] = {}

    # ---- codes (built first, so its memory growth is not hidden by the float index) ----------
    before = rss()
    started = time.perf_counter()
    all_codes = np.empty((len(vf), hasher.bits // 8), dtype=np.uint8)
    for start in range(0, len(vf), CHUNK):
        n = min(CHUNK, len(vf) - start)
        all_codes[start : start + n] = hasher.encode(read_rows(vf.path, start, n, vf.dim), "image")
    codes_index = BinaryIndex(hasher.bits, resolve_preset(None, binary=True))
    codes_index.add(ids, all_codes)
    build_codes = time.perf_counter() - started
    del all_codes
    grown = rss()["RssAnon"] - before["RssAnon"]
    started = time.perf_counter()
    q_codes = hasher.encode(queries, "text")
    _, found_codes = codes_index.search(q_codes, args.k)
    codes_s = time.perf_counter() - started
    codes_file = args.scratch / "codes.faiss"
    codes_index.save(codes_file)
    index_bytes = codes_index.resident_bytes_per_item * codes_index.count  # codes (flat preset: no ids)
    results["codes"] = {"build_s": build_codes, "ram_bytes": grown, "index_bytes": index_bytes,
                        "qps": len(queries) / codes_s, "file_bytes": codes_file.stat().st_size}  # fmt: skip

    before = rss()
    started = time.perf_counter()
    q_codes = hasher.encode(queries, "text")
    _, short = codes_index.search(q_codes, args.rerank)
    _, found_rerank = rerank_exact(queries, short, vf, args.k)
    rerank_s = time.perf_counter() - started
    after = rss()
    results["rerank"] = {
        "build_s": build_codes,
        "ram_bytes": grown + max(0, after["RssAnon"] - before["RssAnon"]),
        "index_bytes": index_bytes,
        "mapped_file_bytes": max(0, after["RssFile"] - before["RssFile"]),
        "qps": len(queries) / rerank_s,
    }

    # ---- exact float --------------------------------------------------------------------------
    before = rss()
    started = time.perf_counter()
    flat = FaissIndex(vf.dim, resolve_preset("flat"))
    for start in range(0, len(vf), CHUNK):
        n = min(CHUNK, len(vf) - start)
        flat.add(ids[start : start + n], read_rows(vf.path, start, n, vf.dim))
    build_float = time.perf_counter() - started
    grown_float = rss()["RssAnon"] - before["RssAnon"]
    started = time.perf_counter()
    _, exact = flat.search(queries, args.k)
    float_s = time.perf_counter() - started
    results["float"] = {"build_s": build_float, "ram_bytes": grown_float, "qps": len(queries) / float_s,
                        "index_bytes": flat.count * (4 * vf.dim + 8)}  # fmt: skip

    def recall(found: np.ndarray) -> float:
        return float(np.mean([len(np.intersect1d(f, e)) for f, e in zip(found, exact)])) / args.k

    results["float"]["recall_at_10"] = 1.0
    results["codes"]["recall_at_10"] = recall(found_codes)
    results["rerank"]["recall_at_10"] = recall(found_rerank)

    print(f"\n{len(vf)} items, {len(queries)} text queries -> images, k={args.k}, hasher {hasher.name} "
          f"({hasher.bits} bits), re-rank C={args.rerank}")
    print(f"{'mode':8s} {'build s':>8s} {'index B/item':>12s} {'RssAnon growth':>16s} {'queries/s':>10s} "
          f"{'R@10 vs exact':>14s}")
    for mode in ("float", "codes", "rerank"):
        r = results[mode]
        print(f"{mode:8s} {r['build_s']:8.1f} {r['index_bytes'] / len(vf):12.1f} {mib(r['ram_bytes']):>16s} "
              f"{r['qps']:10.1f} {r['recall_at_10']:14.3f}")
    print(f"(index B/item: float vectors + 8-byte FAISS ids, or codes alone (row id = position); build of codes includes encoding every vector; "
          f"codes file {results['codes']['file_bytes'] / len(vf):.1f} B/item; rerank also touched {mib(results['rerank']['mapped_file_bytes'])} of the memory-mapped vector file, "
          f"page cache the kernel can drop; peak RSS of the run {mib(rss()['VmHWM'])})")
    if args.json:
        print(json.dumps({"items": len(vf), "queries": len(queries), "bits": hasher.bits, "rerank": args.rerank,
                          "results": results}, indent=2))


if __name__ == "__main__":
    main()
