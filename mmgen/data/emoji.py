"""OpenMoji (color and black) and Twemoji records, joined on code points so one concept spans styles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmgen.data.records import Record, read_json_file
from mmgen.errors import DataError

OPENMOJI_VERSION = "17.0.0"
TWEMOJI_VERSION = "16.0.0"  # the emoji-datasource-twitter npm package
NPM_PACKAGES = {"openmoji": OPENMOJI_VERSION, "emoji-datasource-twitter": TWEMOJI_VERSION}
OPENMOJI_STYLES = ("openmoji-color", "openmoji-black")
EMOJI_STYLES = (*OPENMOJI_STYLES, "twemoji")
PNG_SIDE = 128
LICENCES = {
    "openmoji-color": "CC BY-SA 4.0 (OpenMoji)",
    "openmoji-black": "CC BY-SA 4.0 (OpenMoji)",
    "twemoji": "CC-BY 4.0 (Twemoji images), MIT (emoji-datasource metadata)",
}
FETCH_HINT = "run `mmgen data fetch emoji`"
_SKIN_TONES = {"1F3FB": 1, "1F3FC": 2, "1F3FD": 3, "1F3FE": 4, "1F3FF": 5}
_FLAG_SUBGROUPS = frozenset({"flag", "country-flag", "subdivision-flag", "flags"})


def normalise_codepoints(code: str) -> str:
    """Return code points upper-case, '-' separated, with the FE0F variation selector removed."""
    parts = code.replace("_", "-").replace(" ", "-").upper().split("-")
    return "-".join(c for c in parts if c and c != "FE0F")


def node_modules(data_dir: Path) -> Path:
    """Return the folder the emoji npm packages are installed into."""
    return Path(data_dir) / "npm" / "node_modules"


def openmoji_svg_dir(data_dir: Path, style: str) -> Path:
    """Return the OpenMoji SVG folder of a style ("openmoji-color" or "openmoji-black")."""
    return node_modules(data_dir) / "openmoji" / _style_folder(style) / "svg"


def openmoji_png_dir(data_dir: Path, style: str) -> Path:
    """Return the folder of the PNGs rasterised from one OpenMoji style by `fetch_emoji`."""
    _style_folder(style)
    return Path(data_dir) / "emoji" / style


def openmoji_json(data_dir: Path) -> Path:
    """Return the path of OpenMoji's metadata file."""
    return node_modules(data_dir) / "openmoji" / "data" / "openmoji.json"


def twemoji_dir(data_dir: Path) -> Path:
    """Return the installed emoji-datasource-twitter package folder."""
    return node_modules(data_dir) / "emoji-datasource-twitter"


def check_fetched(data_dir: Path, style: str) -> None:
    """Raise DataError, naming the fetch command, when a style's files are not in data_dir."""
    needed = [openmoji_json(data_dir)]
    if style == "twemoji":
        needed = [twemoji_dir(data_dir) / "emoji.json", twemoji_dir(data_dir) / "img" / "twitter" / "64"]
    elif style in OPENMOJI_STYLES:
        needed.append(openmoji_png_dir(data_dir, style))
    else:
        raise DataError(f"unknown emoji style {style!r}; expected one of {', '.join(EMOJI_STYLES)}")
    missing = [p for p in needed if not p.exists()]
    if missing:
        raise DataError(f"{style} is not fetched into {Path(data_dir)} ({missing[0]} is missing): {FETCH_HINT}")


def _style_folder(style: str) -> str:
    if style not in OPENMOJI_STYLES:
        raise DataError(f"unknown OpenMoji style {style!r}; expected one of {', '.join(OPENMOJI_STYLES)}")
    return style.removeprefix("openmoji-")


def _load_json(path: Path) -> Any:
    return read_json_file(path, FETCH_HINT)


def load_openmoji_table(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Return OpenMoji's metadata keyed by normalised code points."""
    rows = _load_json(openmoji_json(data_dir))
    if not isinstance(rows, list):
        raise DataError(f"{openmoji_json(data_dir)}: expected a JSON list of emoji")
    return {normalise_codepoints(str(r["hexcode"])): r for r in rows if isinstance(r, dict) and r.get("hexcode")}


def _split_tags(tags: Any) -> list[str]:
    if not isinstance(tags, str):
        return []
    out: list[str] = []
    for t in tags.split(","):
        t = t.strip()
        if t and t not in out:
            out.append(t)
    return out


def _tone_of(codes: str) -> int | str | None:
    tones = [str(_SKIN_TONES[c]) for c in codes.split("-") if c in _SKIN_TONES]
    if not tones:
        return None
    return int(tones[0]) if len(tones) == 1 else ",".join(tones)


def _is_flag_codes(codes: str) -> bool:
    parts = codes.split("-")
    try:
        regional = all(0x1F1E6 <= int(c, 16) <= 0x1F1FF for c in parts)
    except ValueError:
        return False
    # Subdivision flags are a black flag followed by tag characters (E0061...).
    return (len(parts) == 2 and regional) or (parts[0] == "1F3F4" and len(parts) > 2 and parts[1].startswith("E00"))


def load_unicode_names(data_dir: Path) -> dict[str, list[str]]:
    """Code points -> the Unicode name and short names from emoji-datasource, as lower-case words."""
    path = twemoji_dir(data_dir) / "emoji.json"
    return unicode_names(_load_json(path)) if path.is_file() else {}


def unicode_names(rows: Any) -> dict[str, list[str]]:
    """Code points -> Unicode name and short names, from emoji-datasource's parsed `emoji.json` rows."""
    out: dict[str, list[str]] = {}
    for row in rows if isinstance(rows, list) else ():
        code = normalise_codepoints(str(row.get("unified") or ""))
        names: list[str] = []
        for n in [row.get("name"), *(row.get("short_names") or [])]:
            if isinstance(n, str):
                words = n.replace("_", " ").replace("-", " ").strip().lower()
                if words and words not in names and not words.startswith("+"):
                    names.append(words)
        if code and names:
            out[code] = names
    return out


def _openmoji_fields(
    row: dict[str, Any], key: str, names: dict[str, list[str]] | None = None
) -> tuple[str, dict[str, Any]]:
    """Return (annotation, meta fields) shared by every style of one OpenMoji concept.

    `names` (from `load_unicode_names`) adds the concept's Unicode name and short names as
    `meta.names`, other words for it that training may use as alternative captions.
    """
    annotation = str(row.get("annotation") or "").strip()
    tags = _split_tags(row.get("tags"))
    group = str(row.get("group") or "")
    subgroup = str(row.get("subgroups") or "")
    tone = row.get("skintone")
    skintone: int | str | None = tone if tone not in ("", None) else _tone_of(key)
    is_extra = group.startswith("extras")
    is_component = group == "component"
    extra_tags = [t for t in tags if t.lower() != annotation.lower()]
    captions = [annotation] + ([f"{annotation}, {', '.join(extra_tags)}"] if extra_tags else [])
    base_hex = str(row.get("skintone_base_hexcode") or "")
    meta: dict[str, Any] = {
        "emoji": row.get("emoji"),
        "tags": tags,
        "openmoji_tags": _split_tags(row.get("openmoji_tags")),
        "openmoji_group": group,
        "openmoji_subgroup": subgroup,
        "skintone": skintone if skintone is not None else False,
        "skintone_base": normalise_codepoints(base_hex) if base_hex else None,
        "is_flag": group == "flags" or subgroup in _FLAG_SUBGROUPS or _is_flag_codes(key),
        "is_extra": is_extra,
        "is_component": is_component,
        "base": skintone is None and not is_component and not is_extra,
        "captions": captions,
    }
    if names is not None:
        meta["names"] = [n for n in names.get(key, []) if n != annotation.lower()]
    return annotation, meta


def openmoji_records(data_dir: Path, style: str) -> Iterator[Record]:
    """Yield one record per OpenMoji emoji of a style, pointing at the PNG rasterised by fetch."""
    png_dir = openmoji_png_dir(data_dir, style)
    names = load_unicode_names(data_dir)
    for key, row in load_openmoji_table(data_dir).items():
        hexcode = str(row["hexcode"])
        text, meta = _openmoji_fields(row, key, names)
        meta = {"style": style, "hexcode": hexcode, **meta}
        png = png_dir / f"{hexcode}.png"
        if not png.is_file():
            yield Record(key=key, text=text, group=key, meta=meta, error=f"image not found: {png} ({FETCH_HINT})")
            continue
        yield Record(key=key, image=str(png.resolve()), text=text, group=key, meta=meta)


def twemoji_records(data_dir: Path) -> Iterator[Record]:
    """Yield Twemoji records (base emoji and skin-tone variations) captioned with OpenMoji's annotation."""
    root = twemoji_dir(data_dir)
    img_dir = (root / "img" / "twitter" / "64").resolve()
    rows = _load_json(root / "emoji.json")
    if not isinstance(rows, list):
        raise DataError(f"{root / 'emoji.json'}: expected a JSON list of emoji")
    openmoji = load_openmoji_table(data_dir) if openmoji_json(data_dir).is_file() else {}
    names = load_unicode_names(data_dir)
    for row in sorted(rows, key=lambda r: (r.get("sort_order", 0), r.get("unified", ""))):
        variants: list[tuple[dict[str, Any], bool]] = [(row, False)]
        skins = row.get("skin_variations") or {}
        variants += [(skins[k], True) for k in sorted(skins)]
        for item, is_variation in variants:
            unified = str(item.get("unified") or "")
            if not unified or not item.get("image"):
                continue
            yield _twemoji_record(row, item, is_variation, img_dir, openmoji, names)


def _twemoji_record(
    row: dict[str, Any],
    item: dict[str, Any],
    is_variation: bool,
    img_dir: Path,
    openmoji: dict[str, dict[str, Any]],
    names: dict[str, list[str]] | None = None,
) -> Record:
    unified = str(item["unified"])
    key = normalise_codepoints(unified)
    name = str(row.get("name") or "")
    om = openmoji.get(key)
    if om is not None:
        text, shared = _openmoji_fields(om, key, names)
    else:
        text = name.lower()
        tone = _tone_of(key)
        category = str(row.get("category") or "")
        shared = {
            "tags": [],
            "skintone": tone if tone is not None else False,
            "is_flag": category == "Flags" or _is_flag_codes(key),
            "is_extra": False,
            "is_component": category == "Component",
            "base": not is_variation and tone is None and category != "Component",
            "captions": [text],
        }
    if is_variation:
        shared["base"] = False
    meta: dict[str, Any] = {
        "style": "twemoji",
        "hexcode": unified,
        "name": name,
        "short_name": row.get("short_name"),
        "short_names": list(row.get("short_names") or []),
        "category": row.get("category"),
        "subcategory": row.get("subcategory"),
        "skin_variation": is_variation,
        "openmoji_match": om is not None,
        **shared,
    }
    png = img_dir / str(item["image"])
    if not png.is_file():
        return Record(key=key, text=text or None, group=key, meta=meta, error=f"image not found: {png}")
    return Record(key=key, image=str(png), text=text or None, group=key, meta=meta)
