"""Text->image ranks for `mmgen eval retrieval --mode keyword|hybrid`, under CLIP_benchmark's definition
(the rank of a query's best relevant image; relevant = same group).

The keyword side ranks the manifest's images by BM25 (SQLite FTS5, `porter unicode61`, the store's
tokenizer) over each image's *keyword document*: the string values of its metadata (tags, keywords,
categories, aliases...) and its file name, leaving out what restates its caption (`KEYWORD_EXCLUDED`:
the caption itself, titles, names; a file name that is only a slug of the caption). The caption is the
query, so indexing it would make keyword retrieval a lookup of the answer; the document is what a
collection has besides captions.
The hybrid side fuses the vector top `depth` with the keyword top `depth` (`mmgen.hybrid.fuse_ranked`).
A relevant image outside the fused list counts as not found (rank `len(images)`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmgen.hybrid import Retrieval, fuse_ranked
from mmgen.store.keywords import backend_query, query_words

# metadata fields that restate an item's caption or name: never part of its evaluation keyword document
KEYWORD_EXCLUDED = frozenset(
    {"captions", "caption", "text", "title", "name", "short_name", "short_names", "icon", "hexcode", "emoji",
     "description", "key", "file", "path", "role"}
)  # fmt: skip


def keyword_document(meta: dict[str, Any], image: str | None = None, text: str | None = None) -> str:
    """The evaluation keyword document of a record: its metadata strings outside KEYWORD_EXCLUDED, and its
    image's file name unless that only restates the caption (a slug like `red-apple.png` for "red apple")."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    for key, value in meta.items():
        if key not in KEYWORD_EXCLUDED:
            walk(value)
    if image:
        stem = query_words(Path(image).stem.replace("_", " "))
        if not set(stem) <= set(query_words(text or "")):
            out.append(" ".join(stem))
    return " ".join(out)


class KeywordRanker:
    """An in-memory FTS5 index over documents (row i = document i)."""

    def __init__(self, documents: Sequence[str]) -> None:
        self.conn = sqlite3.connect(":memory:")
        self.conn.execute(
            "CREATE VIRTUAL TABLE docs USING fts5(body, tokenize = 'porter unicode61 remove_diacritics 2')"
        )  # the store's tokenizer (migration 0003)
        rows = ((i + 1, d) for i, d in enumerate(documents))
        self.conn.executemany("INSERT INTO docs(rowid, body) VALUES (?, ?)", rows)

    def top(self, query: str, depth: int) -> list[tuple[int, float]]:
        """(document index, -bm25) of the best `depth` documents for the words of `query`."""
        if not query_words(query):
            return []
        rows = self.conn.execute(
            "SELECT rowid - 1, -bm25(docs) FROM docs WHERE docs MATCH ? ORDER BY bm25(docs), rowid LIMIT ?",
            (backend_query(query, "sqlite"), int(depth)),
        )
        return [(int(i), float(s)) for i, s in rows]


def ranks_by_mode(
    how: Retrieval,
    query_texts: Sequence[str],
    query_emb: np.ndarray,
    query_groups: np.ndarray,
    image_emb: np.ndarray,
    image_groups: np.ndarray,
    documents: Sequence[str],
    depth: int = 100,
) -> np.ndarray:
    """Rank of each query's best relevant image (-1: it has none) in the keyword or hybrid list."""
    ranker = KeywordRanker(documents)
    n = len(image_emb)
    ranks = np.full(len(query_texts), -1, dtype=np.int64)
    for q, text in enumerate(query_texts):
        relevant = image_groups == query_groups[q]
        if not relevant.any():
            continue
        keyword = ranker.top(text, depth)
        if how.kind == "keyword":
            ranked = [i for i, _ in keyword]
        else:
            scores = image_emb @ query_emb[q]
            top = np.argsort(-scores, kind="stable")[:depth]
            ranked = [i for i, _ in fuse_ranked([(int(i), float(scores[i])) for i in top], keyword, how, 2 * depth)]
        ranks[q] = next((r for r, i in enumerate(ranked) if relevant[i]), n)
    return ranks
