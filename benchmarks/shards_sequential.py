"""Sharded search past this machine's memory: S shards of M vectors, built and searched one at a time.

    python benchmarks/shards_sequential.py [--shards 10] [--per-shard 1000000] [--dim 384] [--nlist 4096]
        [--nprobe 16] [--queries 200] [--threads N] [--json PATH]

`benchmarks/shards.py` holds every vector in memory, which caps it at about 1M x 384-d here. This
script measures a 10M-vector sharded index as its shards: each shard's seeded vectors (the same
clustered distribution, one shared set of centres) are made, indexed, searched and dropped before the
next, and the per-shard top-k lists are merged exactly as `ShardedIndex` merges them
(`mmgen.index.shards.merge_topk`). So the hits are those of the S-shard index; what is *not*
measured is holding all shards at once:
- Flat: each shard is an exact `IndexFlatIP` scan; its merged hits are the exact top k over all
  S x M vectors, which is also the recall reference;
- IVF: trained once, on a sample of shard 0 (39 points per list), every shard a copy of that trained
  empty index (as `mmgen index --shards` builds them), searched at `--nprobe`;
- q/s: queries / the summed search time over the shards (one process answering from all shards in
  turn; shards on separate machines would answer in parallel);
- memory: the summed serialised size of the shards, what they need resident together (Flat, IVF),
  and one shard's, what one machine of S holds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgen.devices import cpu_threads  # noqa: E402
from mmgen.index.shards import merge_topk  # noqa: E402

K = 10
CHUNK = 65_536


def centres(dim: int, seed: int, n: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def vectors(mid: np.ndarray, n: int, seed: int, stream: int) -> np.ndarray:
    """`n` unit vectors around the centres, seeded by (seed, stream): shard s is stream s, queries stream -2."""
    rng = np.random.default_rng([seed, stream + 2])
    out = np.empty((n, mid.shape[1]), dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        part = mid[rng.integers(0, len(mid), stop - start)] + 0.6 * rng.standard_normal((stop - start, mid.shape[1]))
        out[start:stop] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out


def size_mib(index: object) -> float:
    import faiss

    return len(faiss.serialize_index(index)) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--per-shard", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=cpu_threads())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    mid = centres(args.dim, args.seed)
    queries = vectors(mid, args.queries, args.seed, -2)
    total = args.shards * args.per_shard
    print(f"# {args.shards} shards x {args.per_shard:,} = {total:,} vectors, {args.dim}-d, {args.queries} queries, "
          f"k={K}, {args.threads} threads, faiss {faiss.__version__}, load average {os.getloadavg()[0]:.2f}")  # fmt: skip

    started = time.perf_counter()
    sample = vectors(mid, min(args.per_shard, 39 * args.nlist), args.seed, 0)
    trained = faiss.index_factory(args.dim, f"IVF{args.nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    trained.train(sample)
    del sample
    train_s = time.perf_counter() - started
    print(f"# IVF{args.nlist} trained once in {train_s:.0f} s")

    rows = {"flat": {"search_s": 0.0, "bytes": [], "build_s": 0.0, "parts": []},
            "ivf": {"search_s": 0.0, "bytes": [], "build_s": train_s, "parts": []}}  # fmt: skip
    for shard in range(args.shards):
        base = vectors(mid, args.per_shard, args.seed, shard)
        ids = np.arange(shard, total, args.shards, dtype=np.int64)  # row r in shard r % S, as mmgen places rows
        for kind in ("flat", "ivf"):
            started = time.perf_counter()
            if kind == "flat":
                index = faiss.IndexIDMap(faiss.IndexFlatIP(args.dim))
            else:
                inner = faiss.clone_index(trained)
                inner.nprobe = args.nprobe
                index = faiss.IndexIDMap(inner)
            index.add_with_ids(base, ids)
            rows[kind]["build_s"] += time.perf_counter() - started
            rows[kind]["bytes"].append(size_mib(index))
            index.search(queries[:5], K)  # warm-up
            started = time.perf_counter()
            scores, found = index.search(queries, K)
            rows[kind]["search_s"] += time.perf_counter() - started
            rows[kind]["parts"].append((scores, found))
            del index
        del base
        print(f"#   shard {shard + 1}/{args.shards} done")

    truth = merge_topk(rows["flat"]["parts"], K, len(queries))[1]
    report = {"shards": args.shards, "per_shard": args.per_shard, "total": total, "dim": args.dim,
              "queries": args.queries, "threads": args.threads, "nprobe": args.nprobe, "nlist": args.nlist,
              "machine": {"cpus": os.cpu_count(), "arch": platform.machine()}, "rows": []}  # fmt: skip
    print(f"\n| index ({total:,} vectors) | shards | build s | memory, all shards MiB | one shard MiB | q/s | recall@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, label in (("flat", "Flat"), ("ivf", f"IVF{args.nlist},Flat nprobe {args.nprobe}")):
        r = rows[kind]
        found = merge_topk(r["parts"], K, len(queries))[1]
        rec = float(np.mean([len(np.intersect1d(f[f >= 0], t)) / K for f, t in zip(found, truth)]))
        qps = len(queries) / r["search_s"]
        row = {"index": label, "build_s": round(r["build_s"], 1), "mib_all": round(sum(r["bytes"]), 1),
               "mib_one": round(max(r["bytes"]), 1), "qps": round(qps, 2), "recall_at_10": round(rec, 4)}  # fmt: skip
        report["rows"].append(row)
        print(f"| {label} | {args.shards} | {row['build_s']:,.0f} | {row['mib_all']:,.0f} | {row['mib_one']:,.0f} | "
              f"{qps:,.1f} | {rec:.3f} |")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
