"""The records `mmgen.records` hands back that both history and feedback use: a model, a feedback row, an output.

Also the one JSON Lines writer every export uses (`write_jsonl`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmgen.errors import ConfigError
from mmgen.store.models import Feedback, Output


def utc(value: datetime | None) -> datetime | None:
    """Stored times as aware UTC: SQLite hands back naive UTC (CURRENT_TIMESTAMP), PostgreSQL aware ones."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def iso(value: datetime | None) -> str | None:
    """An ISO 8601 UTC time stamp, or None."""
    stamp = utc(value)
    return stamp.isoformat() if stamp else None


@dataclass(frozen=True)
class ModelRef:
    """The model behind an output: a `models` row, or (searches) the encoder named in the prompt, version None."""

    kind: str
    name: str
    version: str | None

    @property
    def label(self) -> str:
        """`name@version`, or the name alone."""
        return f"{self.name}@{self.version}" if self.version else self.name

    def to_json(self) -> dict[str, Any]:
        """`{"kind", "name", "version"}`."""
        return {"kind": self.kind, "name": self.name, "version": self.version}


@dataclass(frozen=True)
class FeedbackRecord:
    """One user's score and note on one output."""

    id: int
    output_id: int
    user: str
    score: int
    note: str | None
    created_at: datetime | None
    updated_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; times as ISO 8601 UTC."""
        return {"id": self.id, "output_id": self.output_id, "user": self.user, "score": self.score,
                "note": self.note, "created_at": iso(self.created_at), "updated_at": iso(self.updated_at)}  # fmt: skip


@dataclass(frozen=True)
class OutputRecord:
    """What a prompt produced: a text or a file, its model, scores, latency and feedback."""

    id: int
    text: str | None
    file_uri: str | None
    model: ModelRef | None
    scores: dict[str, Any]
    latency_ms: float | None
    created_at: datetime | None
    feedback: tuple[FeedbackRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; times as ISO 8601 UTC."""
        return {"id": self.id, "text": self.text, "file": self.file_uri,
                "model": self.model.to_json() if self.model else None, "scores": self.scores,
                "latency_ms": self.latency_ms, "created_at": iso(self.created_at),
                "feedback": [f.to_json() for f in self.feedback]}  # fmt: skip


def model_of(output: Output, params: dict[str, Any]) -> ModelRef | None:
    """The output's model row; for an output without one (a search), the encoder its prompt names."""
    if output.model is not None:
        return ModelRef(output.model.kind, output.model.name, output.model.version)
    encoder = params.get("encoder") if isinstance(params, dict) else None
    return ModelRef("encoder", str(encoder), None) if encoder else None


def feedback_record(row: Feedback) -> FeedbackRecord:
    """A feedback row as a record."""
    return FeedbackRecord(row.id, row.output_id, row.user, row.score, row.note, row.created_at, row.updated_at)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write one JSON line per record, replacing `path` atomically (ConfigError if it cannot); returns the count."""
    path = path.expanduser()
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count
