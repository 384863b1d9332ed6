"""Load on `mmgen serve`: N concurrent clients send a fixed count of queries; throughput, latency, errors.

    python benchmarks/serve_load.py [--workspace indexes] [--queries 400] [--clients 1,4,16]
        [--route api|knn] [--k 10] [--cli 5] [--seed 0] [--json out.json]

One run, in this order:
1. `mmgen serve` is started as its own process on a free loopback port and warmed up (20 queries).
2. For each client count C, C threads (one keep-alive HTTP connection each) share one seeded list
   of `--queries` query texts, drawn from the workspace's own item texts; each request is timed
   from send to the last byte of the answer. Reported: queries/s over the wall time of the whole
   batch, p50 / p95 / p99 latency, and errors (any status but 200, or a refused connection).
3. Beside it, the single-process figures: `--cli` runs of `mmgen search TEXT --json` as whole
   processes (start-up, model and FAISS load included), and the same queries through an
   in-process `Searcher.search` (what one HTTP request costs without HTTP).

Every request is recorded by the server like a CLI search, so the workspace's `prompts` table grows
by the number of requests sent. The server takes one query at a time per index (its searcher is
not thread-safe), so concurrency buys overlap of HTTP and JSON work, not parallel encoding.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MMGEN = [sys.executable, "-m", "mmgen"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[pos]


def query_texts(workspace: Path, n: int, seed: int) -> list[str]:
    """`n` texts drawn with a seed from the workspace's items (repeats allowed when it has fewer)."""
    from sqlalchemy import select

    from mmgen.store.db import open_store
    from mmgen.store.models import Item
    from mmgen.workspace import Workspace

    ws = Workspace.resolve(workspace)
    with open_store(ws.db_url) as store, store.session() as s:
        texts = sorted({t for t in s.scalars(select(Item.text).where(Item.text.is_not(None)).limit(50_000)) if t})
    if not texts:
        raise SystemExit(f"{workspace} has no item texts to query with")
    rng = random.Random(seed)
    return [rng.choice(texts) for _ in range(n)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(workspace: Path, port: int, extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [*MMGEN, "serve", "--workspace", str(workspace), "--port", str(port), *(extra or [])]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mmgen serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("mmgen serve did not answer /healthz within 300 s")


def request_body(route: str, text: str, k: int) -> tuple[str, bytes]:
    if route == "knn":
        return "/knn-service", json.dumps({"text": text, "num_images": k, "modality": "image"}).encode()
    return "/api/search", json.dumps({"text": text, "k": k}).encode()


def load(port: int, texts: list[str], clients: int, route: str, k: int) -> dict[str, Any]:
    """`clients` threads with one keep-alive connection each drain one shared queue of queries."""
    lock = threading.Lock()
    queue = list(reversed(texts))
    latencies: list[float] = []
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if not queue:
                    break
                text = queue.pop()
            path, body = request_body(route, text, k)
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                ms = (time.perf_counter() - started) * 1000
                if response.status != 200:
                    with lock:
                        errors.append(f"{response.status} {payload[:80]!r}")
                    continue
                with lock:
                    latencies.append(ms)
            except OSError as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "queries": len(texts),
        "ok": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "qps": round(len(latencies) / wall, 2),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
    }


def cli_runs(workspace: Path, texts: list[str], runs: int, k: int) -> dict[str, Any]:
    """`mmgen search TEXT --json` as whole processes: wall time per run, and the in-process latency it reports."""
    walls, inner = [], []
    for text in texts[:runs]:
        started = time.perf_counter()
        out = subprocess.run([*MMGEN, "search", text, "--workspace", str(workspace), "-k", str(k), "--json"],
                             capture_output=True, text=True, check=True)  # fmt: skip
        walls.append((time.perf_counter() - started) * 1000)
        inner.append(float(json.loads(out.stdout)["latency_ms"]))
    return {"runs": runs, "process_p50_ms": round(statistics.median(walls), 1),
            "reported_query_p50_ms": round(statistics.median(inner), 2)}  # fmt: skip


def in_process(workspace: Path, texts: list[str], k: int) -> dict[str, Any]:
    """The same queries through one open `Searcher` (encode + FAISS + SQL join + recording)."""
    from mmgen.search import Searcher
    from mmgen.store.db import open_store
    from mmgen.workspace import Workspace

    ws = Workspace.resolve(workspace)
    with open_store(ws.db_url) as store:
        searcher = Searcher(ws, store)
        for text in texts[:20]:
            searcher.search(text, k=k)
        times = []
        for text in texts:
            started = time.perf_counter()
            searcher.search(text, k=k)
            times.append((time.perf_counter() - started) * 1000)
    return {"queries": len(texts), "qps": round(len(times) / (sum(times) / 1000), 2),
            "p50_ms": round(percentile(times, 50), 2), "p95_ms": round(percentile(times, 95), 2),
            "p99_ms": round(percentile(times, 99), 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, default=ROOT / "indexes")
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--route", choices=("api", "knn"), default="api")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cli", type=int, default=5, help="whole-process `mmgen search` runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sync-records", action="store_true", help="serve with --sync-records (knn route)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    texts = query_texts(args.workspace, args.queries, args.seed)
    counts = [int(c) for c in args.clients.split(",")]
    port = free_port()
    server = start_server(args.workspace, port, ["--sync-records"] if args.sync_records else [])
    try:
        load(port, query_texts(args.workspace, 20, args.seed + 1), 1, args.route, args.k)  # warm-up
        rows = []
        for c in counts:
            rows.append(load(port, texts, c, args.route, args.k))
            r = rows[-1]
            print(f"serve {args.route} clients {c:3d}: {r['qps']:7.1f} q/s  p50 {r['p50_ms']:7.1f}  "
                  f"p95 {r['p95_ms']:7.1f}  p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}", flush=True)  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=60)
    inproc = in_process(args.workspace, texts, args.k)
    print(f"in-process Searcher.search: {inproc['qps']:7.1f} q/s  p50 {inproc['p50_ms']:7.1f}  "
          f"p95 {inproc['p95_ms']:7.1f}  p99 {inproc['p99_ms']:7.1f} ms", flush=True)  # fmt: skip
    cli = cli_runs(args.workspace, texts, args.cli, args.k) if args.cli else None
    if cli:
        print(f"mmgen search as a process: p50 {cli['process_p50_ms']:.0f} ms per query "
              f"(of which the query itself {cli['reported_query_p50_ms']:.1f} ms)")  # fmt: skip
    report = {"workspace": str(args.workspace), "route": args.route, "k": args.k, "sync_records": args.sync_records,
              "serve": rows,
              "in_process": inproc, "cli": cli, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if any(r["errors"] for r in rows):
        raise SystemExit("errors under load: " + "; ".join(e for r in rows for e in r["error_examples"]))


if __name__ == "__main__":
    main()
