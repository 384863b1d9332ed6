"""Keyword and hybrid retrieval beside the vector search, and results folded by concept group.

- `keyword`: the store's keyword index alone (SQLite FTS5 BM25; PostgreSQL ts_rank_cd), see
  `mmgen.store.keywords`.
- `hybrid`: a vector list and a keyword list, each `depth` deep (default max(100, 4k)) and each
  filtered by `--where` inside its own ranking, fused into one:
  - `rrf` (default): reciprocal rank fusion, score = sum over lists of w / (60 + rank), w = 1 for
    the vector list and `keyword_weight` (default 4) for the keyword list. It needs no score
    calibration between BM25 and cosine (k = 60 as in Cormack et al. 2009 and in Weaviate, Vespa
    and Milvus, fixed). The weight 4 was chosen on the protocol's development split, where it beat
    weights 1 and 2 and every convex alpha tried, and tied 8 (`benchmarks/keyword_heavy.py`);
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
# RRF's keyword weight, chosen on the protocol's development split (benchmarks/keyword_heavy.py: best mean
# R@10 over its keyword-heavy and held-out-concept dev sets among 1, 2, 4, 8 and convex 0.1-0.7)
DEFAULT_KEYWORD_WEIGHT = 4.0
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
    keyword_weight: float = DEFAULT_KEYWORD_WEIGHT  # rrf: the keyword list's weight (the vector list's is 1)
    shared_ties: bool = False  # rrf: items with equal scores in a list share its best rank (competition ranking)

    def check(self) -> Retrieval:
        if self.kind not in RETRIEVALS:
            raise ConfigError(f"retrieval must be one of {', '.join(RETRIEVALS)}, not {self.kind!r}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"--fusion must be one of {', '.join(FUSIONS)}, not {self.fusion!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha must be in [0, 1], not {self.alpha}")
        if not 0.0 <= self.keyword_weight <= 100.0:
            raise ConfigError(f"--keyword-weight must be in [0, 100], not {self.keyword_weight}")
        if self.depth is not None and not 1 <= self.depth <= MAX_DEPTH:
            raise ConfigError(f"--depth must be in 1..{MAX_DEPTH}, not {self.depth}")
        return self

    def depth_for(self, k: int) -> int:
        return min(MAX_DEPTH, max(k, self.depth if self.depth is not None else max(100, 4 * k)))

    def label(self) -> str:
        """A short name: vector, keyword, hybrid rrf, hybrid rrf kw=2, hybrid convex a=0.3."""
        if self.kind != "hybrid":
            return self.kind
        if self.fusion == "convex":
            return f"hybrid convex a={self.alpha:g}"
        return f"hybrid rrf kw={self.keyword_weight:g}" + (" ties" if self.shared_ties else "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"retrieval": self.kind}
        if self.kind == "hybrid":
            out["fusion"] = self.fusion
            if self.fusion == "convex":
                out["alpha"] = self.alpha
            else:
                out["keyword_weight"] = self.keyword_weight
                if self.shared_ties:
                    out["shared_ties"] = True
        if self.kind != "vector":
            out["keyword_syntax"] = self.syntax
        return out


def keyword_hits(searcher: Searcher, text: str, to: str, k: int, where: Filters, syntax: str) -> list[Hit]:
    """The store's keyword ranking of the index's `to` items, as hits (score: BM25 / ts_rank_cd)."""
    from mmgen.store.keywords import keyword_search

    with searcher.store.session() as s:
        found = keyword_search(s, searcher.index_id, to, text, k, where=where, syntax=syntax)
    return searcher.hits_for_items(to, found)


def fuse_ranked(
    vector: Sequence[tuple[int, float]], keyword: Sequence[tuple[int, float]], how: Retrieval, k: int
) -> list[tuple[int, float]]:
    """The fused top k (id, score) of two ranked (id, score) lists, best first (ties: better rank, then id)."""
    vec_rank = {i: r for r, (i, _) in enumerate(vector, 1)}
    kw_rank = {i: r for r, (i, _) in enumerate(keyword, 1)}
    ids = list(dict.fromkeys([i for i, _ in vector] + [i for i, _ in keyword]))
    if how.fusion == "rrf":
        shared = (_shared_ranks(vector), _shared_ranks(keyword)) if how.shared_ties else (vec_rank, kw_rank)
        weights = ((shared[0], 1.0), (shared[1], how.keyword_weight))
        fused = {i: sum(w / (RRF_K + ranks[i]) for ranks, w in weights if i in ranks) for i in ids}
    else:
        vec_norm, kw_norm = _minmax(vector), _minmax(keyword)
        fused = {i: how.alpha * vec_norm.get(i, 0.0) + (1 - how.alpha) * kw_norm.get(i, 0.0) for i in ids}
    never = 10**9
    order = sorted(ids, key=lambda i: (-fused[i], min(vec_rank.get(i, never), kw_rank.get(i, never)), i))
    return [(i, fused[i]) for i in order[:k]]


def fuse(vector: Sequence[Hit], keyword: Sequence[Hit], how: Retrieval, k: int) -> list[Hit]:
    """One list from a vector and a keyword list of hits (best first), each annotated with its `parts`."""
    from dataclasses import replace

    vec_rank = {h.id: (r, h) for r, h in enumerate(vector, 1)}
    kw_rank = {h.id: (r, h) for r, h in enumerate(keyword, 1)}
    fused = fuse_ranked([(h.id, h.score) for h in vector], [(h.id, h.score) for h in keyword], how, k)
    out = []
    for i, score in fused:
        base = (vec_rank.get(i) or kw_rank[i])[1]
        parts = {"fused": round(score, 6), "vector": _part(vec_rank.get(i)), "keyword": _part(kw_rank.get(i))}
        out.append(replace(base, score=score, parts=parts))
    return out


def _shared_ranks(ranked: Sequence[tuple[int, float]]) -> dict[int, int]:
    """Competition ranks of a best-first list: items with the same score share the best rank of their run
    (BM25 gives every document with the same words and length one score; the other list then orders them)."""
    ranks: dict[int, int] = {}
    previous, rank = None, 0
    for position, (item, score) in enumerate(ranked, 1):
        if previous is None or float(score) != previous:
            rank, previous = position, float(score)
        ranks[item] = rank
    return ranks


def _part(found: tuple[int, Hit] | None) -> dict[str, Any] | None:
    return None if found is None else {"rank": found[0], "score": round(float(found[1].score), 6)}


def _minmax(ranked: Sequence[tuple[int, float]]) -> dict[int, float]:
    if not ranked:
        return {}
    scores = [float(sc) for _, sc in ranked]
    low, high = min(scores), max(scores)
    span = high - low
    return {i: (float(sc) - low) / span if span > 0 else 1.0 for i, sc in ranked}


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
