"""Indexing throughput of the local engine against the Ray engine, on the same source.

    python benchmarks/ray_vs_local.py --workspace build/ray-bench --source emoji --workers 2
        [--encoder st:all-MiniLM-L6-v2] [--batch-size 128] [--ray-address auto] [--json PATH]

Indexes SOURCE into two fresh workspaces (DIR/local and DIR/ray, deleted first), once per engine,
and prints items/s for each: wall time of the whole `mmgen index` run (plan, encode, commit,
FAISS sync), plus the Ray engine's start-up (cluster and actors), which a long run amortises.
Without --ray-address a local Ray cluster is started on this machine, so the comparison shows
the engine's overhead here; the Ray engine pays off across machines or GPUs.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgen.engines import run_index  # noqa: E402
from mmgen.indexer import IndexOptions  # noqa: E402
from mmgen.workspace import Workspace  # noqa: E402


def bench(engine: str, args: argparse.Namespace) -> dict[str, object]:
    """Index the source into a fresh workspace with one engine: items, seconds, items/s, stage times."""
    root = Path(args.workspace) / engine
    shutil.rmtree(root, ignore_errors=True)
    opts = IndexOptions(encoder=args.encoder, batch_size=args.batch_size, workers=args.workers, progress=False)
    started = time.perf_counter()
    report = run_index(args.source, Workspace.resolve(root), opts, engine=engine, ray_address=args.ray_address)
    seconds = time.perf_counter() - started
    items = report.added + report.updated
    return {
        "engine": engine,
        "items": items,
        "failed": report.failed_count,
        "seconds": round(seconds, 2),
        "items_per_s": round(items / seconds, 1) if seconds else None,
        "timings_s": {k: round(v, 2) for k, v in report.timings.items()},
    }


def main() -> None:
    """Run both engines and print a table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", required=True, help="Folder for the two benchmark workspaces.")
    parser.add_argument("--source", required=True, help="Any `mmgen index` source: a folder, a manifest, emoji ...")
    parser.add_argument("--workers", type=int, default=2, help="Decoding threads (local) and Ray actors (ray).")
    parser.add_argument("--encoder", default="st:all-MiniLM-L6-v2")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--ray-address", default=None, help="auto or HOST:PORT [default: a local Ray cluster].")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()

    results = [bench(engine, args) for engine in ("local", "ray")]
    print(f"{args.source} with {args.encoder}, batch {args.batch_size}, workers {args.workers} ({platform.node()})")
    for r in results:
        print(f"  {r['engine']:<5} {r['items']:>8} items in {r['seconds']:>8.2f} s: {r['items_per_s']} items/s  "
              f"{r['timings_s']}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"source": args.source, "workers": args.workers, "results": results}, indent=2))


if __name__ == "__main__":
    main()
