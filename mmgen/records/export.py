"""Export the prompts as JSON Lines: what was asked, by whom, when, from which prompt, what it retrieved and made."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from mmgen.records.privacy import Redaction
from mmgen.records.rows import iso, write_jsonl
from mmgen.store.models import Prompt

if TYPE_CHECKING:
    from mmgen.store.db import Store

_BATCH = 500


def prompt_line(prompt: Prompt, hide: Redaction) -> dict[str, Any]:
    """One line of the prompts export; `hide` decides the user id and whether the text and query image stay."""
    return hide.without_text({
        "id": prompt.id,
        "kind": prompt.kind,
        "created_at": iso(prompt.created_at),
        "user": hide.user(prompt.user),
        "parent_id": prompt.parent_id,
        "text": prompt.text,
        "image": prompt.image_uri,
        "params": prompt.params,
        "hits": [{"item_id": r.item_id, "rank": r.rank, "score": r.score, "modality": r.modality}
                 for r in prompt.retrievals],
        "outputs": [o.id for o in prompt.outputs],
    }, "text", "image")  # fmt: skip


def export_prompts(store: Store, path: Path, redact: Redaction | None = None) -> int:
    """Write every prompt, oldest first, as one JSON line (see `prompt_line`); returns the count.

    The file is replaced atomically; `redact` puts pseudonyms for the users and/or leaves out the
    prompts' text and query images (`mmgen.records.privacy`).
    """
    hide = redact or Redaction()
    stmt = (
        select(Prompt)
        .options(selectinload(Prompt.retrievals), selectinload(Prompt.outputs))
        .order_by(Prompt.id)
        .execution_options(yield_per=_BATCH)
    )
    with store.session() as s:
        return write_jsonl(path, (prompt_line(p, hide) for p in s.scalars(stmt)))
