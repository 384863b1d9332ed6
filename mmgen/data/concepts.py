"""What counts as one concept ("own group") everywhere in mmgen.

A record's concept is its group with emoji skin-tone variants folded into their base concept:
"1F44B-1F3FB" (waving hand, light skin tone) and "1F44B" are one concept. Every place that leaves
an item's own concept out (captioner neighbours, generator neighbours, the hasher's hold-out,
the protocols' splits) asks this module, so near-copies of a held-out picture cannot leak in
through a variant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmgen.data.records import Record

SKIN_TONES = frozenset({"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"})


def fold_group(group: str, meta: dict[str, Any] | None = None) -> str:
    """The base concept of a group: `meta["skintone_base"]` when set, else the group without tone code points."""
    base = (meta or {}).get("skintone_base")
    if isinstance(base, str) and base:
        return base
    stripped = "-".join(c for c in group.split("-") if c not in SKIN_TONES)
    return stripped or group


def concept_of(record: Record) -> str:
    """The concept of a record: its folded group (or its key when it has no group)."""
    return fold_group(record.group or record.key, record.meta)


def concept_key(group: str | None, meta: dict[str, Any] | None, item_id: int) -> str:
    """The concept of a stored item: its folded group, or `item:ID` for an item without a group."""
    if group is None:
        return f"item:{item_id}"
    return fold_group(group, meta if isinstance(meta, dict) else None)
