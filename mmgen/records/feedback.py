"""Feedback on outputs: rating (one 1..5 score and note per user per output), the summary per model and kind, the export."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from mmgen.errors import ConfigError, RecordNotFoundError
from mmgen.records.privacy import Redaction
from mmgen.records.rows import FeedbackRecord, ModelRef, feedback_record, iso, model_of, write_jsonl
from mmgen.store.models import FEEDBACK_SCORES, PROMPT_KINDS, Feedback, Output, Prompt

if TYPE_CHECKING:
    from mmgen.store.db import Store

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class ScoreStats:
    """Count, mean and distribution (score -> count, every score 1..5 present) of some feedback."""

    count: int
    mean: float | None
    distribution: dict[int, int]

    @classmethod
    def of(cls, scores: Iterable[int]) -> ScoreStats:
        """The statistics of a list of scores."""
        values = list(scores)
        counts = Counter(values)
        lo, hi = FEEDBACK_SCORES
        return cls(len(values), sum(values) / len(values) if values else None, {s: counts[s] for s in range(lo, hi + 1)})

    def to_json(self) -> dict[str, Any]:
        """`{"count", "mean", "distribution": {"1": n, ..., "5": n}}`."""
        return {"count": self.count, "mean": self.mean, "distribution": {str(k): v for k, v in self.distribution.items()}}


@dataclass(frozen=True)
class FeedbackReport:
    """Feedback summarised overall, per model (name + version) and per prompt kind."""

    model: str | None
    total: ScoreStats
    by_model: tuple[tuple[ModelRef | None, ScoreStats], ...]
    by_kind: tuple[tuple[str, ScoreStats], ...]

    def to_json(self) -> dict[str, Any]:
        """`{"model", "total", "by_model": [{"model", ...stats}], "by_kind": [{"kind", ...stats}]}`."""
        return {"model": self.model, "total": self.total.to_json(),
                "by_model": [{"model": m.to_json() if m else None, **st.to_json()} for m, st in self.by_model],
                "by_kind": [{"kind": k, **st.to_json()} for k, st in self.by_kind]}  # fmt: skip


def default_user() -> str:
    """The login name of the process, or `anonymous`."""
    from mmgen.store.repo import login_user

    return login_user() or ANONYMOUS


def check_score(score: Any) -> int:
    """A feedback score: a whole number from 1 to 5 (ConfigError otherwise)."""
    lo, hi = FEEDBACK_SCORES
    if isinstance(score, bool) or not isinstance(score, int) or not lo <= score <= hi:
        raise ConfigError(f"the score must be a whole number from {lo} to {hi}, not {score!r}")
    return score


def rate(store: Store, output_id: int, score: int, note: str | None = None, user: str | None = None) -> FeedbackRecord:
    """Record `user`'s score (1..5) of an output; a second rating by the same user updates it.

    `note=None` keeps the note already given (an empty string clears it); `user` defaults to the login name.
    """
    score = check_score(score)
    who = (user if user is not None else default_user()).strip()
    if not who or len(who) > 128:
        raise ConfigError(f"the user must be 1 to 128 characters, not {who!r}")
    with store.session() as s:
        if s.get(Output, output_id) is None:
            raise RecordNotFoundError(
                f"no output {output_id} in the store (`mmgen show PROMPT_ID` lists a prompt's output ids)"
            )
        lookup = select(Feedback).where(Feedback.output_id == output_id, Feedback.user == who)
        row = s.scalars(lookup).one_or_none()
        if row is None:
            try:
                with s.begin_nested():
                    row = Feedback(output_id=output_id, user=who, score=score, note=note or None)
                    s.add(row)
                s.commit()
                s.refresh(row)
                return feedback_record(row)
            except IntegrityError:  # the same user rated it concurrently: update that row instead
                row = s.scalars(lookup).one()
        row.score = score
        if note is not None:
            row.note = note or None
        row.updated_at = func.now()  # type: ignore[assignment]  (a SQL expression, read back by refresh)
        s.commit()
        s.refresh(row)
        return feedback_record(row)


def _rated(s: Session, model: str | None) -> Iterator[tuple[Feedback, Output, Prompt, ModelRef | None]]:
    stmt = (
        select(Feedback, Output, Prompt)
        .join(Output, Feedback.output_id == Output.id)
        .join(Prompt, Output.prompt_id == Prompt.id)
        .options(selectinload(Output.model))
        .order_by(Prompt.id, Output.id, Feedback.user)
    )
    for fb, out, prompt in s.execute(stmt):
        ref = model_of(out, prompt.params)
        if model is None or (ref is not None and ref.name == model):
            yield fb, out, prompt, ref


def feedback_summary(store: Store, model: str | None = None) -> FeedbackReport:
    """Scores per model (name + version) and per prompt kind: count, mean and distribution; `model` keeps one name."""
    per_model: dict[ModelRef | None, list[int]] = {}
    per_kind: dict[str, list[int]] = {}
    with store.session() as s:
        for fb, _, prompt, ref in _rated(s, model):
            per_model.setdefault(ref, []).append(fb.score)
            per_kind.setdefault(prompt.kind, []).append(fb.score)
    order = {k: i for i, k in enumerate(PROMPT_KINDS)}
    return FeedbackReport(
        model=model,
        total=ScoreStats.of(x for scores in per_kind.values() for x in scores),
        by_model=tuple(
            (ref, ScoreStats.of(scores))
            for ref, scores in sorted(per_model.items(), key=lambda kv: (kv[0] is None, kv[0] and kv[0].label))
        ),
        by_kind=tuple(
            (kind, ScoreStats.of(per_kind[kind])) for kind in sorted(per_kind, key=lambda k: order.get(k, len(order)))
        ),
    )


def _preference(fb: Feedback, out: Output, prompt: Prompt, ref: ModelRef | None, hide: Redaction) -> dict[str, Any]:
    """One line of the feedback export."""
    asked = {"id": prompt.id, "kind": prompt.kind, "text": prompt.text, "image": prompt.image_uri,
             "params": prompt.params}  # fmt: skip
    return hide.without_text({
        "prompt": hide.without_text(asked, "text", "image"),
        "output": {"id": out.id, "text": out.text, "file": out.file_uri, "scores": out.scores},
        "model": ref.to_json() if ref else None,
        "score": fb.score,
        "note": fb.note,
        "user": hide.user(fb.user),
        "rated_at": iso(fb.updated_at),
    }, "note")  # fmt: skip


def export_feedback(store: Store, path: Path, model: str | None = None, redact: Redaction | None = None) -> int:
    """Write every rated output as one JSON line (prompt, params, output, model, score, note, user); returns the count.

    A preference data set: prompts with several rated outputs give ranked pairs. `redact` puts
    pseudonyms for the users and/or leaves out what people wrote (`mmgen.records.privacy`). The
    file is replaced atomically.
    """
    hide = redact or Redaction()
    with store.session() as s:
        return write_jsonl(path, (_preference(*row, hide) for row in _rated(s, model)))
