"""The store as the record of the work: history, one prompt in full, lineage links, feedback and its export.

Every search, caption and generation is already recorded (`prompts`, `retrievals`, `outputs`);
these functions read it back and add the two things only a person can say: which prompt a
prompt was refined from (`link`) and how good an output was (`rate`, one 1..5 score per user per
output). Each returns dataclasses with `to_json()`; only the CLI prints.

An output's model is its `models` row (kind, name, version). Searches record no model row: their
encoder (the prompt's `params.encoder`) stands in, with no version; `--model NAME` matches either.

`history` (reading back, lineage, `link`), `feedback` (`rate`, the summary, the export), `export`
(the prompts as JSON Lines), `privacy` (`forget` a user; pseudonyms and dropped text in exports),
`sheet` (a contact sheet), `rows` (the records they share, and the JSON Lines writer).
"""

from mmgen.records.feedback import (
    FeedbackReport,
    ScoreStats,
    check_score,
    default_user,
    export_feedback,
    feedback_summary,
    rate,
)
from mmgen.records.export import export_prompts
from mmgen.records.history import (
    HitRecord,
    LineageNode,
    PromptDetail,
    PromptSummary,
    history,
    lineage,
    link,
    parse_since,
    require_prompt,
    show,
)
from mmgen.records.privacy import ForgetReport, Redaction, forget, pseudonym
from mmgen.records.rows import FeedbackRecord, ModelRef, OutputRecord
from mmgen.records.sheet import contact_sheet

__all__ = [
    "FeedbackRecord",
    "FeedbackReport",
    "ForgetReport",
    "HitRecord",
    "LineageNode",
    "ModelRef",
    "OutputRecord",
    "PromptDetail",
    "PromptSummary",
    "Redaction",
    "ScoreStats",
    "check_score",
    "contact_sheet",
    "default_user",
    "export_feedback",
    "export_prompts",
    "feedback_summary",
    "forget",
    "history",
    "lineage",
    "link",
    "parse_since",
    "pseudonym",
    "rate",
    "require_prompt",
    "show",
]
