"""What a search returns: `Hit` (one result joined to its SQL item) and `SearchResult` (a query's hits,
latency and recorded prompt id). Re-exported by `mmgen.search`."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class Hit:
    """One search result, joined to its SQL item."""

    id: int
    score: float
    modality: str
    text: str | None
    uri: str | None
    meta: dict[str, Any]
    key: str = ""
    corpus: str = ""
    group: str | None = None
    parts: dict[str, Any] | None = None  # keyword / hybrid: fused score, vector and keyword rank + score
    members: list[dict[str, Any]] | None = None  # --group: every hit of this hit's group, best first

    def to_json(self) -> dict[str, Any]:
        """The stable `--json` form of a hit (`parts` and `members` only where they apply)."""
        extra = {k: v for k, v in (("parts", self.parts), ("members", self.members)) if v is not None}
        return {
            "id": self.id,
            "score": round(float(self.score), 6),
            "modality": self.modality,
            "text": self.text,
            "uri": self.uri,
            "meta": self.meta,
            "key": self.key,
            "corpus": self.corpus,
            "group": self.group,
            **extra,
        }


class SearchResult:
    """Hits for one query, with its latency and the id of the recorded prompt.

    A search recorded in the background (`Searcher(background_records=True)`, the default) returns before
    its record is written: reading `prompt_id` waits for that record (None if it failed or was not asked)."""

    def __init__(self, query: dict[str, Any], hits: list[Hit] | None = None, latency_ms: float = 0.0,
                 prompt_id: int | None = None) -> None:  # fmt: skip
        self.query = query
        self.hits: list[Hit] = hits if hits is not None else []
        self.latency_ms = latency_ms
        self._prompt_id = prompt_id
        self._written: threading.Event | None = None  # set by the record writer once this search is recorded

    @property
    def prompt_id(self) -> int | None:
        if self._written is not None:
            self._written.wait()
        return self._prompt_id

    @prompt_id.setter
    def prompt_id(self, value: int | None) -> None:
        self._prompt_id = value

    def __repr__(self) -> str:
        return f"SearchResult(query={self.query!r}, hits={len(self.hits)}, latency_ms={self.latency_ms:.3f})"

    def to_json(self) -> dict[str, Any]:
        """`{"query": ..., "hits": [...]}` as documented in the README."""
        return {
            "query": self.query,
            "hits": [h.to_json() for h in self.hits],
            "latency_ms": round(self.latency_ms, 3),
            "prompt_id": self.prompt_id,
        }
