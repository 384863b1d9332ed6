"""Keyword and hybrid retrieval beside the vector search, and results folded by concept group.

- `keyword`: the store's keyword index alone (SQLite FTS5 BM25; PostgreSQL ts_rank_cd), see
  `mmgen.store.keywords`.
- `hybrid`: a vector list and a keyword list, each `depth` deep (default max(100, 4k)) and each
  filtered by `--where` inside its own ranking, fused into one:
  - `rrf` (default): reciprocal rank fusion, score = sum over lists of 1 / (60 + rank). It needs
    no score calibration between BM25 and cosine, which is why it is the default (k = 60 as in
    Cormack et al. 2009 and in Weaviate, Vespa and Milvus; fixed, not tuned here);
  - `convex`: alpha x min-max-normalised cosine + (1 - alpha) x min-max-normalised keyword score
    over each list's candidates (0 where a list lacks the item); alpha defaults to 0.5.
- `group`: hits of one concept `group` fold into one result that lists its members; k counts groups.

Each hybrid hit carries `parts`: its fused score and both component ranks and scores (None where
the item is absent from that list).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmgen.errors import ConfigError

if TYPE_CHECKING:
    from mmgen.search import Hit, Searcher
    from mmgen.store.filters import Filters

RETRIEVALS = ("vector", "keyword", "hybrid")
FUSIONS = ("rrf", "convex")
RRF_K = 60
DEFAULT_ALPHA = 0.5
MAX_DEPTH = 1000
GROUP_FACTOR = 8  # --group fetches this many hits per wanted group before folding (at most MAX_DEPTH)


@dataclass(frozen=True)
class Retrieval:
    """How hits are found: vector, keyword or hybrid, and the hybrid's fusion."""

    kind: str = "vector"
    fusion: str = "rrf"
    alpha: float = DEFAULT_ALPHA
    depth: int | None = None
    syntax: str = "plain"

    def check(self) -> Retrieval:
        if self.kind not in RETRIEVALS:
            raise ConfigError(f"retrieval must be one of {', '.join(RETRIEVALS)}, not {self.kind!r}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"--fusion must be one of {', '.join(FUSIONS)}, not {self.fusion!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha must be in [0, 1], not {self.alpha}")
        if self.depth is not None and not 1 <= self.depth <= MAX_DEPTH:
            raise ConfigError(f"--depth must be in 1..{MAX_DEPTH}, not {self.depth}")
        return self

    def depth_for(self, k: int) -> int:
        return min(MAX_DEPTH, max(k, self.depth if self.depth is not None else max(100, 4 * k)))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"retrieval": self.kind}
        if self.kind == "hybrid":
            out["fusion"] = self.fusion
            if self.fusion == "convex":
                out["alpha"] = self.alpha
        if self.kind != "vector":
            out["keyword_syntax"] = self.syntax
        return out


def keyword_hits(searcher: Searcher, text: str, to: str, k: int, where: Filters, syntax: str) -> list[Hit]:
    """The store's keyword ranking of the index's `to` items, as hits (score: BM25 / ts_rank_cd)."""
    from mmgen.store.keywords import keyword_search

    with searcher.store.session() as s:
        found = keyword_search(s, searcher.index_id, to, text, k, where=where, syntax=syntax)
    return searcher.hits_for_items(to, found)


def fuse(vector: Sequence[Hit], keyword: Sequence[Hit], how: Retrieval, k: int) -> list[Hit]:
    """One list from a vector and a keyword list (best first), each hit annotated with its `parts`."""
    from dataclasses import replace

    vec_rank = {h.id: (r, h) for r, h in enumerate(vector, 1)}
    kw_rank = {h.id: (r, h) for r, h in enumerate(keyword, 1)}
    ids = list(dict.fromkeys([h.id for h in vector] + [h.id for h in keyword]))
    if how.fusion == "rrf":
        fused = {i: sum(1.0 / (RRF_K + ranks[i][0]) for ranks in (vec_rank, kw_rank) if i in ranks) for i in ids}
    else:
        vec_norm, kw_norm = _minmax(vector), _minmax(keyword)
        fused = {i: how.alpha * vec_norm.get(i, 0.0) + (1 - how.alpha) * kw_norm.get(i, 0.0) for i in ids}
    order = sorted(ids, key=lambda i: (-fused[i], min(vec_rank.get(i, (10**9,))[0], kw_rank.get(i, (10**9,))[0]), i))
    out = []
    for i in order[:k]:
        base = (vec_rank.get(i) or kw_rank[i])[1]
        parts = {
            "fused": round(fused[i], 6),
            "vector": _part(vec_rank.get(i)),
            "keyword": _part(kw_rank.get(i)),
        }
        out.append(replace(base, score=fused[i], parts=parts))
    return out


def _part(found: tuple[int, Hit] | None) -> dict[str, Any] | None:
    return None if found is None else {"rank": found[0], "score": round(float(found[1].score), 6)}


def _minmax(hits: Sequence[Hit]) -> dict[int, float]:
    if not hits:
        return {}
    scores = [float(h.score) for h in hits]
    low, high = min(scores), max(scores)
    span = high - low
    return {h.id: (float(h.score) - low) / span if span > 0 else 1.0 for h in hits}


def group_hits(hits: Sequence[Hit], k: int) -> list[Hit]:
    """Fold hits of one `group` into the best-ranked one, which lists every member (k counts groups).

    A hit without a group is its own group."""
    from dataclasses import replace

    groups: dict[Any, list[Hit]] = {}
    for hit in hits:
        groups.setdefault(hit.group if hit.group is not None else ("item", hit.id), []).append(hit)
    out = []
    for members in list(groups.values())[:k]:
        listed = [{"id": m.id, "score": round(float(m.score), 6), "key": m.key, "corpus": m.corpus,
                   "text": m.text, "style": m.meta.get("style")} for m in members]  # fmt: skip
        out.append(replace(members[0], members=listed))
    return out


def group_depth(k: int) -> int:
    return min(MAX_DEPTH, max(k, GROUP_FACTOR * k))
