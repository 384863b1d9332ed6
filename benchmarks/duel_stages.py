"""Per-stage timings of one query in mmgen and in txtai, as a duel (workers alive, queries alternated).

    python benchmarks/duel_stages.py WORK [N]      # EXTRA_WS=PATH adds a third worker over another mmgen workspace

WORK holds what `benchmarks/compare_peers.py` builds for its duel: `texts.txt` (one text per line),
`ws0` (`mmgen index texts.jsonl --workspace WORK/ws0 --encoder st:all-MiniLM-L6-v2`) and `txtai0`
(`build/peers/txtai/bin/python benchmarks/compare_peers.py --txtai-index WORK/texts.txt WORK/txtai0`).
N queries drawn from the texts (seed 1), each asked twice. The mmgen worker wraps the encoder, the
FAISS search, the SQL join and the record; the txtai worker its `batchtransform`, `ann.search` and
`database.search`. It prints each stage's p50 in ms. It runs in the project's python, which starts
the txtai worker from `build/peers/txtai` (made by compare_peers)."""

import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def timed(store, key, fn):
    def wrap(*a, **kw):
        t = time.perf_counter()
        out = fn(*a, **kw)
        store[key] = store.get(key, 0) + (time.perf_counter() - t) * 1000
        return out

    return wrap


def worker_mmgen(ws_path, bg):
    from mmgen.search import Searcher
    from mmgen.store.db import open_store
    from mmgen.workspace import Workspace

    ws = Workspace.resolve(Path(ws_path))
    store = open_store(ws.db_url)
    s = Searcher(ws, store, background_records=bg == "1")
    st = {}
    s.encoder.encode_text = timed(st, "encode", s.encoder.encode_text)
    s._join = timed(st, "join", s._join)
    s.record = timed(st, "record", s.record)
    f = s._faiss("text")

    class P:
        def __getattr__(self, n):
            return getattr(f, n)

        def search(self, *a, **kw):
            return timed(st, "faiss", f.search)(*a, **kw)

    p = P()
    s._faiss = lambda m: p
    s.search(text="warm up", k=10)
    print("ready", flush=True)
    only = os.environ.get("ENC_ONLY") == "1" and bg == "2"
    for line in sys.stdin:
        st.clear()
        t0 = time.perf_counter()
        if only:
            s.encoder.encode_text([line.rstrip("\n")])
        else:
            s.search(text=line.rstrip("\n"), k=10)
        st["total"] = (time.perf_counter() - t0) * 1000
        print(json.dumps(st), flush=True)


def worker_txtai(path):
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    from txtai import Embeddings

    emb = Embeddings()
    emb.load(path)
    st = {}
    emb.batchtransform = timed(st, "encode", emb.batchtransform)
    emb.ann.search = timed(st, "faiss", emb.ann.search)
    emb.database.search = timed(st, "sql", emb.database.search)
    emb.search("warm up", 10)
    print("ready", flush=True)
    for line in sys.stdin:
        st.clear()
        t0 = time.perf_counter()
        emb.search(line.rstrip("\n"), 10)
        st["total"] = (time.perf_counter() - t0) * 1000
        print(json.dumps(st), flush=True)


def main():
    work = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    texts = (work / "texts.txt").read_text().splitlines()
    queries = random.Random(1).sample(texts, n)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    txpy = str(ROOT / "build/peers/txtai/bin/python")
    workers = {
        "mmgen": [sys.executable, __file__, "--mmgen", str(work / "ws0"), "0"],
        "txtai": [txpy, __file__, "--txtai", str(work / "txtai0")],
    }
    extra = os.environ.get("EXTRA_WS")
    if extra:
        workers["mmgen-x"] = [sys.executable, __file__, "--mmgen", extra, "2"]
    procs = {
        k: subprocess.Popen(v, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
        for k, v in workers.items()
    }
    for k, p in procs.items():
        assert p.stdout.readline().strip() == "ready", k
    res = {k: [] for k in procs}
    names = list(procs)
    for i, q in enumerate(queries * 2):
        for k in names if i % 2 == 0 else names[::-1]:
            p = procs[k]
            p.stdin.write(q + "\n")
            p.stdin.flush()
            res[k].append(json.loads(p.stdout.readline()))
    for k, rows in res.items():
        keys = sorted({x for r in rows for x in r})
        print(k, " ".join(f"{x}={statistics.median([r.get(x, 0) for r in rows]):.2f}" for x in keys))
    for p in procs.values():
        p.stdin.close()
        p.wait()


if __name__ == "__main__":
    if sys.argv[1] == "--mmgen":
        worker_mmgen(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "--txtai":
        worker_txtai(sys.argv[2])
    else:
        main()
