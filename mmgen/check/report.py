"""The report of `mmgen check`: problems (stable codes, what they mean, how to repair them) and repair actions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ERROR, WARNING, INFO = "error", "warning", "info"
EXAMPLES = 5  # examples kept per problem


@dataclass(frozen=True)
class Action:
    """What `--repair` does about a problem: `kind` on an index (and modality); `fresh` drops the cache file first."""

    kind: str  # migrate | faiss | codes (rebuild that cache) | reencode | register | drop-rows | drop-items
    index: str | None = None
    modality: str | None = None
    model: str | None = None
    fresh: bool = False
    prune: bool = False  # deletes SQL rows: only with --prune
    ids: tuple[int, ...] = ()  # drop-rows: row ids; drop-items: item ids


@dataclass
class Problem:
    """One inconsistency: a stable `code`, what it concerns, what was found, what it means, how to repair it."""

    code: str
    severity: str  # error | warning | info (info: tolerated by mmgen, not counted as a problem)
    message: str
    meaning: str
    repair: str
    index: str | None = None
    modality: str | None = None
    model: str | None = None
    count: int = 1
    examples: list[str] = field(default_factory=list)
    action: Action | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form (`mmgen check --json`)."""
        return {
            "code": self.code, "severity": self.severity, "index": self.index, "modality": self.modality,
            "model": self.model, "message": self.message, "meaning": self.meaning, "repair": self.repair,
            "repairable": self.action is not None, "needs_prune": bool(self.action and self.action.prune),
            "count": self.count, "examples": self.examples,
        }  # fmt: skip


@dataclass
class CheckOptions:
    """Settings of one `mmgen check`."""

    repair: bool = False
    prune: bool = False
    sample: int = 256  # rows per modality whose FAISS vectors and codes are recomputed and compared
    norm_tolerance: float = 1e-3


@dataclass
class CheckReport:
    """What a check found (after a repair: what is left, beside what was found and done)."""

    workspace: str
    store: str
    revision: str | None = None
    head: str | None = None
    indexes: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # name -> "ok" or the problem code
    problems: list[Problem] = field(default_factory=list)
    found: list[Problem] | None = None  # before the repair; None when no repair ran
    repaired: list[str] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        """Record one problem."""
        self.problems.append(problem)

    @property
    def ok(self) -> bool:
        """No error or warning left (informational notes do not count)."""
        return not any(p.severity != INFO for p in self.problems)

    def counts(self) -> dict[str, int]:
        """Problems left per severity."""
        return {s: sum(p.severity == s for p in self.problems) for s in (ERROR, WARNING, INFO)}

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form (`mmgen check --json`)."""
        out = {
            "ok": self.ok, "workspace": self.workspace, "store": self.store,
            "revision": {"current": self.revision, "head": self.head}, "indexes": self.indexes,
            "models": self.models, "counts": self.counts(), "problems": [p.to_json() for p in self.problems],
        }  # fmt: skip
        if self.found is not None:
            out["found"] = [p.to_json() for p in self.found]
            out["repaired"] = self.repaired
        return out

