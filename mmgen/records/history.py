"""Reading the record back: history, one prompt in full, its lineage; and linking a prompt to its parent."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session, selectinload

from mmgen.errors import ConfigError, RecordNotFoundError
from mmgen.records.rows import OutputRecord, feedback_record, iso, model_of
from mmgen.store.models import (
    PROMPT_KINDS,
    Corpus,
    Item,
    ModelRecord,
    Output,
    Prompt,
    Retrieval,
)

if TYPE_CHECKING:
    from mmgen.store.db import Store

_AGE = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$")
_AGE_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class HitRecord:
    """One retrieved neighbour of a prompt; `item_id` and the item's fields are None once the item is deleted."""

    rank: int
    score: float
    modality: str
    item_id: int | None
    corpus: str | None
    key: str | None
    text: str | None
    uri: str | None

    def to_json(self) -> dict[str, Any]:
        """`{"rank", "score", "modality", "item_id", "corpus", "key", "text", "uri"}`."""
        return {"rank": self.rank, "score": self.score, "modality": self.modality, "item_id": self.item_id,
                "corpus": self.corpus, "key": self.key, "text": self.text, "uri": self.uri}  # fmt: skip


@dataclass(frozen=True)
class PromptSummary:
    """A prompt as `mmgen history` lists it: what was asked, by whom, when, how many hits, and its outputs."""

    id: int
    kind: str
    text: str | None
    image_uri: str | None
    user: str | None
    created_at: datetime | None
    parent_id: int | None
    hits: int
    outputs: tuple[OutputRecord, ...]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; times as ISO 8601 UTC."""
        return {"id": self.id, "kind": self.kind, "text": self.text, "image": self.image_uri, "user": self.user,
                "created_at": iso(self.created_at), "parent_id": self.parent_id, "hits": self.hits,
                "outputs": [o.to_json() for o in self.outputs]}  # fmt: skip


@dataclass(frozen=True)
class PromptDetail(PromptSummary):
    """A prompt in full (`mmgen show`): also its parameters and every retrieved neighbour."""

    params: dict[str, Any] = field(default_factory=dict)
    retrievals: tuple[HitRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The summary's keys plus `params` and `retrievals`."""
        return {**super().to_json(), "params": self.params, "retrievals": [r.to_json() for r in self.retrievals]}


@dataclass(frozen=True)
class LineageNode:
    """A prompt in a lineage tree; `focus` marks the one asked about."""

    id: int
    kind: str
    text: str | None
    image_uri: str | None
    created_at: datetime | None
    focus: bool = False
    children: tuple[LineageNode, ...] = ()

    def walk(self, depth: int = 0) -> Iterator[tuple[int, LineageNode]]:
        """Every node with its depth, parents before children."""
        yield depth, self
        for child in self.children:
            yield from child.walk(depth + 1)

    def to_json(self) -> dict[str, Any]:
        """Nested `{"id", "kind", "text", "image", "created_at", "focus", "children"}`."""
        return {"id": self.id, "kind": self.kind, "text": self.text, "image": self.image_uri,
                "created_at": iso(self.created_at), "focus": self.focus,
                "children": [c.to_json() for c in self.children]}  # fmt: skip


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: an ISO date or date-time (local time unless it names a zone), or an age (`90m`, `12h`, `7d`, `2w`).

    Returns an aware UTC datetime; anything else is a ConfigError.
    """
    age = _AGE.match(text)
    if age:
        return (now or datetime.now(timezone.utc)) - timedelta(**{_AGE_UNITS[age.group(2)]: int(age.group(1))})
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since takes a date (2026-12-01), a date and time (2026-12-01T14:30, local unless it ends in Z or "
            f"+HH:MM) or an age (90m, 12h, 7d, 2w), not {text!r}"
        ) from None
    return (stamp if stamp.tzinfo else stamp.astimezone()).astimezone(timezone.utc)


def _output(row: Output, params: dict[str, Any]) -> OutputRecord:
    return OutputRecord(row.id, row.text, row.file_uri, model_of(row, params), dict(row.scores or {}),
                        row.latency_ms, row.created_at, tuple(feedback_record(f) for f in row.feedback))  # fmt: skip


def _summary_fields(p: Prompt, hits: int) -> dict[str, Any]:
    return {"id": p.id, "kind": p.kind, "text": p.text, "image_uri": p.image_uri, "user": p.user,
            "created_at": p.created_at, "parent_id": p.parent_id, "hits": hits,
            "outputs": tuple(_output(o, p.params) for o in p.outputs)}  # fmt: skip


def _with_outputs() -> Any:
    outputs = selectinload(Prompt.outputs)
    return [outputs.selectinload(Output.model), outputs.selectinload(Output.feedback)]


def history(
    store: Store,
    *,
    kind: str | None = None,
    user: str | None = None,
    since: datetime | None = None,
    model: str | None = None,
    limit: int = 20,
) -> list[PromptSummary]:
    """Prompts newest first with their outputs, filtered by kind, user, time (`since`, inclusive) and model name."""
    if kind is not None and kind not in PROMPT_KINDS:
        raise ConfigError(f"unknown prompt kind {kind!r}; valid choices: {', '.join(PROMPT_KINDS)}")
    if limit < 1:
        raise ConfigError(f"the number of prompts to list must be at least 1, not {limit}")
    stmt = select(Prompt).options(*_with_outputs()).order_by(Prompt.created_at.desc(), Prompt.id.desc()).limit(limit)
    if kind is not None:
        stmt = stmt.where(Prompt.kind == kind)
    if user is not None:
        stmt = stmt.where(Prompt.user == user)
    if since is not None:
        stmt = stmt.where(Prompt.created_at >= since.astimezone(timezone.utc))
    if model is not None:
        named = select(ModelRecord.id).where(ModelRecord.name == model)
        by_encoder = and_(Output.model_id.is_(None), Prompt.params["encoder"].as_string() == model)
        stmt = stmt.where(exists().where(Output.prompt_id == Prompt.id, or_(Output.model_id.in_(named), by_encoder)))
    with store.session() as s:
        prompts = list(s.scalars(stmt))
        counts = dict(
            s.execute(
                select(Retrieval.prompt_id, func.count())
                .where(Retrieval.prompt_id.in_([p.id for p in prompts]))
                .group_by(Retrieval.prompt_id)
            ).all()
        )
        return [PromptSummary(**_summary_fields(p, counts.get(p.id, 0))) for p in prompts]


def _no_prompt(prompt_id: int) -> RecordNotFoundError:
    return RecordNotFoundError(f"no prompt {prompt_id} in the store (`mmgen history` lists them)")


def _prompt(s: Session, prompt_id: int) -> Prompt:
    prompt = s.get(Prompt, prompt_id)
    if prompt is None:
        raise _no_prompt(prompt_id)
    return prompt


def show(store: Store, prompt_id: int) -> PromptDetail:
    """One prompt in full: parameters, retrieved items (rank, score, corpus:key, text), outputs with model and feedback."""
    with store.session() as s:
        prompt = s.scalars(select(Prompt).options(*_with_outputs()).where(Prompt.id == prompt_id)).one_or_none()
        if prompt is None:
            raise _no_prompt(prompt_id)
        rows = s.execute(
            select(Retrieval, Item, Corpus.name)
            .outerjoin(Item, Retrieval.item_id == Item.id)
            .outerjoin(Corpus, Item.corpus_id == Corpus.id)
            .where(Retrieval.prompt_id == prompt_id)
            .order_by(Retrieval.rank)
        ).all()
        hits = tuple(
            HitRecord(r.rank, r.score, r.modality, r.item_id, corpus, item.key if item else None,
                      item.text if item else None, item.uri if item else None)
            for r, item, corpus in rows
        )
        return PromptDetail(**_summary_fields(prompt, len(hits)), params=dict(prompt.params or {}), retrievals=hits)


def _ancestors(s: Session, prompt_id: int) -> list[int]:
    """`prompt_id`'s parent, grandparent, ... (nearest first)."""
    chain: list[int] = []
    seen = {prompt_id}
    parent = s.scalar(select(Prompt.parent_id).where(Prompt.id == prompt_id))
    while parent is not None and parent not in seen:  # `link` refuses loops; `seen` guards a hand-edited store
        chain.append(parent)
        seen.add(parent)
        parent = s.scalar(select(Prompt.parent_id).where(Prompt.id == parent))
    return chain


def lineage(store: Store, prompt_id: int) -> LineageNode:
    """The lineage of a prompt: its chain of ancestors from the oldest down to it, and all its descendants below it."""
    with store.session() as s:
        _prompt(s, prompt_id)
        up = _ancestors(s, prompt_id)
        children: dict[int, list[int]] = {}
        frontier, seen = [prompt_id], {prompt_id, *up}
        while frontier:
            rows = s.execute(
                select(Prompt.id, Prompt.parent_id).where(Prompt.parent_id.in_(frontier)).order_by(Prompt.id)
            ).all()
            frontier = [i for i, _ in rows if i not in seen]
            seen.update(frontier)
            for child, parent in rows:
                if child in frontier:
                    children.setdefault(parent, []).append(child)
        info = {p.id: p for p in s.scalars(select(Prompt).where(Prompt.id.in_(seen)))}

    def node(pid: int, below: tuple[LineageNode, ...]) -> LineageNode:
        p = info[pid]
        return LineageNode(p.id, p.kind, p.text, p.image_uri, p.created_at, pid == prompt_id, below)

    def subtree(pid: int) -> LineageNode:
        return node(pid, tuple(subtree(c) for c in children.get(pid, [])))

    tree = subtree(prompt_id)
    for ancestor in up:
        tree = node(ancestor, (tree,))
    return tree


def require_prompt(store: Store, prompt_id: int) -> None:
    """RecordNotFoundError unless the store has this prompt (checked before a `--from` run records anything)."""
    with store.session() as s:
        _prompt(s, prompt_id)


def link(store: Store, prompt_id: int, parent_id: int | None) -> None:
    """Record that `prompt_id` was refined from `parent_id` (None: unlink); both must exist and no loop may form."""
    with store.session() as s:
        prompt = _prompt(s, prompt_id)
        if parent_id is not None:
            _prompt(s, parent_id)
            if parent_id == prompt_id:
                raise ConfigError(f"prompt {prompt_id} cannot be its own parent")
            if prompt_id in _ancestors(s, parent_id):
                raise ConfigError(
                    f"prompt {parent_id} descends from prompt {prompt_id}: linking {prompt_id} to it would make a loop"
                )
        prompt.parent_id = parent_id
        s.commit()
