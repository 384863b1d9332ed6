"""Joining emoji-style icon names (Iconify's fluent-emoji, emojione, ...) to Unicode code points.

Names are normalised (lower case, `&` -> `and`, apostrophes dropped, non-alphanumerics removed) and
looked up among OpenMoji's annotations and emoji-datasource's names and short names; Fluent's
skin-tone suffixes, numbered variants and flags by country name are joined too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FLUENT_TONES = {
    "light": "1F3FB",
    "medium-light": "1F3FC",
    "medium": "1F3FD",
    "medium-dark": "1F3FE",
    "dark": "1F3FF",
}


def normalise_name(name: str) -> str:
    """Lower case, `&` -> `and`, apostrophes dropped, every non-alphanumeric removed (the join key)."""
    s = name.lower().replace("&", "and").replace("'", "").replace("\u2019", "")
    return re.sub(r"[^a-z0-9]", "", s)


@dataclass
class EmojiJoin:
    """Normalised names -> code points, from OpenMoji and emoji-datasource."""

    by_name: dict[str, str]
    openmoji: dict[str, dict[str, Any]]
    twemoji_names: dict[str, str]  # code points -> Unicode name (lower case)
    unicode_names: dict[str, list[str]] = field(default_factory=dict)  # code points -> Unicode and short names
    flags: dict[str, str] = field(default_factory=dict)  # normalised country ("flag: X") -> code points


def emoji_join_table(data_dir: Path) -> EmojiJoin:
    """Build the name join table from the fetched emoji corpora (OpenMoji is required)."""
    from mmgen.data import emoji

    openmoji = emoji.load_openmoji_table(data_dir)
    by_name: dict[str, str] = {}
    twemoji_names: dict[str, str] = {}
    ds_path = emoji.twemoji_dir(data_dir) / "emoji.json"
    rows = emoji._load_json(ds_path) if ds_path.is_file() else []
    for row in rows if isinstance(rows, list) else ():
        code = emoji.normalise_codepoints(str(row.get("unified") or ""))
        if not code:
            continue
        if row.get("name"):
            twemoji_names[code] = str(row["name"]).lower()
        for n in [row.get("name"), *(row.get("short_names") or [])]:
            if isinstance(n, str) and n:
                by_name.setdefault(normalise_name(n), code)
    # OpenMoji's annotations win over emoji-datasource's names (they are the project's captions).
    flags: dict[str, str] = {}
    for code, row in openmoji.items():
        ann = str(row.get("annotation") or "")
        if ann:
            by_name[normalise_name(ann)] = code
            if ann.lower().startswith("flag:"):
                flags.setdefault(normalise_name(ann.split(":", 1)[1]), code)
    return EmojiJoin(by_name, openmoji, twemoji_names, emoji.unicode_names(rows), flags)


def join_emoji_name(name: str, aliases: list[str], table: EmojiJoin) -> tuple[str | None, str]:
    """(code points or None, how it joined) for one emoji-style icon name."""
    candidates = [name, *aliases]
    for how, n in [("name", candidates[0])] + [("alias", a) for a in candidates[1:]]:
        code = table.by_name.get(normalise_name(n))
        if code:
            return code, how
    # Fluent writes skin tones as a suffix: thumbs-up-medium-dark = "thumbs up: medium-dark skin tone".
    for suffix in sorted(_FLUENT_TONES, key=len, reverse=True):
        if name.endswith(f"-{suffix}"):
            base = name[: -len(suffix) - 1]
            code = table.by_name.get(normalise_name(f"{base} {suffix} skin tone"))
            if code:
                return code, "skin tone"
            base_code = table.by_name.get(normalise_name(base))
            if base_code:
                # Unicode puts the tone after the first code point (1F468-1F3FB-200D-1F9B2), else at the end.
                first, *rest = base_code.split("-")
                tone = _FLUENT_TONES[suffix]
                for toned in ("-".join([first, tone, *rest]), f"{base_code}-{tone}"):
                    if toned in table.openmoji:
                        return toned, "skin tone"
    # Numbered variants of one emoji (streamline's thumbs-up-1, thumbs-up-2).
    stripped = re.sub(r"-\d+$", "", name)
    if stripped != name:
        code = table.by_name.get(normalise_name(stripped))
        if code:
            return code, "numbered"
    # Flags by country: emojione's flag-for-germany, streamline's bare germany ("flag: Germany").
    country = normalise_name(name.removeprefix("flag-for-").removeprefix("flag-"))
    if country and country in table.flags:
        return table.flags[country], "flag"
    return None, "none"
