"""Sharded FAISS indexes: build time, memory, queries/s and recall@10 against exact search.

    python benchmarks/shards.py [--n 200000] [--dim 384] [--shards 1,2,4] [--preset flat --preset IVF1024,Flat]
        [--nprobe 16] [--queries 1000] [--threads N] [--workdir DIR]

Writes N seeded synthetic unit vectors (clustered, so IVF has structure to find) to a vector file in
a temporary index folder, then for each preset and shard count builds the FAISS cache the way
`mmgen index` does (`IndexFolder.sync` + `save`), reloads it from disk and searches it:
- build s: sync (train once on a sample, add to the shards) + save;
- files MiB: the FAISS files on disk; RSS +MiB: resident memory gained by loading them (in a fresh process);
- q/s: a batch of queries at k=10; recall@10: overlap with `exact_knn` over all vectors.
For IVF presets it also merges the shards on disk (`IndexFolder.merge_ondisk`) and measures the
memory-mapped merge the same way (its RSS grows with the lists a search touches, not with N).
Default IVF preset: `IVF{nlist},Flat` with nlist the power of two nearest 4 * sqrt(N), at most N / 39.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgen.devices import cpu_threads  # noqa: E402
from mmgen.index import IndexFolder, Preset, resolve_preset  # noqa: E402
from mmgen.index.knn import exact_knn  # noqa: E402

K = 10
CHUNK = 65_536


def rss_mib() -> float:
    """Resident memory of this process, MiB (Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def synthetic(n: int, dim: int, seed: int, centers: int = 256) -> np.ndarray:
    """`n` unit vectors around `centers` random directions (seeded)."""
    rng = np.random.default_rng(seed)
    mid = rng.standard_normal((centers, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        part = mid[rng.integers(0, centers, stop - start)] + 0.6 * rng.standard_normal((stop - start, dim))
        out[start:stop] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out


def default_ivf(n: int) -> str:
    """An IVF factory sized for n vectors (about 4 sqrt(n) lists, 39 training points per list at least)."""
    nlist = 2 ** round(math.log2(max(16, 4 * math.sqrt(n))))
    while nlist > 16 and nlist * 39 > n:
        nlist //= 2
    return f"IVF{nlist},Flat"


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top k found in the top k."""
    return float(np.mean([len(np.intersect1d(f[f >= 0], t)) / len(t) for f, t in zip(found, truth)]))


def _measure(root: Path, merged: bool, threads: int, queries: np.ndarray, truth: np.ndarray) -> tuple[float, ...]:
    import faiss

    faiss.omp_set_num_threads(threads)
    gc.collect()
    before = rss_mib()
    folder = IndexFolder.open(root)
    index = folder.load_merged("image") if merged else folder.faiss("image")
    grown = rss_mib() - before
    index.search(queries[:10], K)  # warm-up
    started = time.perf_counter()
    _, ids = index.search(queries, K)
    qps = len(queries) / (time.perf_counter() - started)
    return grown, qps, recall(ids, truth)


def measure(root: Path, merged: bool, threads: int, queries: np.ndarray, truth: np.ndarray) -> tuple[float, ...]:
    """(RSS MiB gained by loading, queries/s at k=10, recall@10), in a fresh process so RSS is its own."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measure, root, merged, threads, queries, truth).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--shards", default="1,2,4", help="comma-separated shard counts")
    parser.add_argument("--preset", action="append", help="preset name or factory string (repeatable)")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=cpu_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="where the index folders go (default: a temp dir)")
    args = parser.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    shard_counts = [int(s) for s in args.shards.split(",")]
    presets = args.preset or ["flat", default_ivf(args.n)]
    work = Path(tempfile.mkdtemp(prefix="mmgen-shards-", dir=args.workdir))
    try:
        started = time.perf_counter()
        base = synthetic(args.n, args.dim, args.seed)
        queries = synthetic(args.queries, args.dim, args.seed + 1)
        _, truth = exact_knn(queries, base, K)
        print(f"# {args.n} x {args.dim}-d vectors, {args.queries} queries, k={K}, {args.threads} threads "
              f"(data + exact search {time.perf_counter() - started:.1f} s, faiss {faiss.__version__})\n")  # fmt: skip
        print(
            f"{'preset':<18} {'shards':>6} {'build s':>8} {'files MiB':>10} {'RSS +MiB':>9} {'q/s':>9} {'recall@10':>9}"
        )
        for name in presets:
            preset = resolve_preset(name)
            if "IVF" in preset.factory:
                preset = Preset(name=preset.name, factory=preset.factory, min_train=0,
                                build=preset.build, search={**preset.search, "nprobe": args.nprobe})  # fmt: skip
            label = f"{preset.factory}" + (f" np{args.nprobe}" if "IVF" in preset.factory else "")
            for n_shards in shard_counts:
                root = work / f"{preset.name.replace(',', '_')}-{n_shards}"
                folder = IndexFolder.create(root, name=root.name, encoder="synthetic", encoder_checksum="0" * 64,
                                            dim=args.dim, preset=preset, shards=n_shards)  # fmt: skip
                vectors = folder.vectors("image")
                for start in range(0, args.n, CHUNK):
                    vectors.append(base[start : start + CHUNK])
                live = np.arange(args.n, dtype=np.int64)
                started = time.perf_counter()
                folder.sync("image", live)
                folder.save("image")
                build = time.perf_counter() - started
                files = sum(p.stat().st_size for p in folder.faiss_files("image")) / 2**20
                del folder
                grown, qps, rec = measure(root, False, args.threads, queries, truth)
                print(f"{label:<18} {n_shards:>6} {build:>8.1f} {files:>10.1f} {grown:>9.1f} {qps:>9.0f} {rec:>9.3f}")
                if "IVF" in preset.factory:
                    folder = IndexFolder.open(root)
                    started = time.perf_counter()
                    out = folder.merge_ondisk("image")
                    merge = time.perf_counter() - started
                    files = (out.stat().st_size + out.with_suffix(".ivfdata").stat().st_size) / 2**20
                    grown, qps, rec = measure(root, True, args.threads, queries, truth)
                    print(f"{'  merged on disk':<18} {n_shards:>6} {merge:>8.1f} {files:>10.1f} {grown:>9.1f} "
                          f"{qps:>9.0f} {rec:>9.3f}")  # fmt: skip
                shutil.rmtree(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
