"""A reader beside a running indexer: searches in a loop until a stop file appears, one JSON line per search.

    python search_loop.py WORKSPACE OUT.jsonl STOP_FILE QUERY

Each round opens a fresh `Searcher` (what every `mmgen search` does: a stale FAISS file catches up
with SQL at open) and also queries one long-lived `Searcher` opened at the start (what `mmgen serve`
does), text->image and text->text, recorded in the store like any search (so the reader writes to
SQLite while the indexer commits). A failure is a line with "error"; the loop carries on.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path


def main(ws_dir: str, out_path: str, stop_path: str, query: str) -> None:
    """Search until `stop_path` exists; write the query vector first, then one line per search."""
    from mmgen.search import Searcher
    from mmgen.store.db import open_store
    from mmgen.workspace import Workspace

    ws = Workspace.resolve(ws_dir)
    stop = Path(stop_path)
    with open(out_path, "a", encoding="utf-8") as out:

        def emit(record: dict) -> None:
            out.write(json.dumps(record) + "\n")
            out.flush()

        held_store = open_store(ws.db_url)
        held = Searcher(ws, held_store)
        emit({"query_vector": held.encode_queries(texts=[query])[0].tolist()})
        rounds = 0
        while not stop.exists() or rounds < 2:
            rounds += 1
            for kind in ("fresh", "held"):
                store = open_store(ws.db_url) if kind == "fresh" else held_store
                try:
                    searcher = Searcher(ws, store) if kind == "fresh" else held
                    for to in ("image", "text"):
                        started = time.time()
                        result = searcher.search(text=query, to=to, k=10)
                        emit({"t": started, "searcher": kind, "to": to, "prompt_id": result.prompt_id,
                              "hits": [[h.id, h.key, h.modality, h.score] for h in result.hits]})  # fmt: skip
                except Exception:  # noqa: BLE001 - every failure is recorded for the test to count
                    emit({"t": time.time(), "searcher": kind, "error": traceback.format_exc()})
                finally:
                    if kind == "fresh":
                        store.close()
        held_store.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
