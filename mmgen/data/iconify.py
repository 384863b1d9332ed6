"""Iconify JSON icon sets (npm `@iconify-json/PREFIX`): emoji styles and named icon sets as records.

- **Emoji styles** (fluent-emoji, emojione, ...): each icon name is joined to Unicode code points
  by a normalised name (lower case, `&` -> `and`, apostrophes dropped, non-alphanumerics removed)
  against OpenMoji's annotations and emoji-datasource's names and short names, so its `group` is
  the same concept key as OpenMoji's and Twemoji's and its text is OpenMoji's annotation. An icon
  that joins to nothing is kept as an icon concept of its own (`icon:NAME`), never dropped.
- **Named icon sets** (mdi, tabler, ...): the caption is the icon name as words, plus the set's
  aliases and categories. Variant suffixes (`-outline`, `-rounded`, `-bold`, ...) mark styles of
  one concept, so `mdi:robot-outline` and `tabler:robot` share the group `icon:robot`.

Icons are rendered once to PNG (`DATA/iconify/PREFIX/NAME.png`) by libvips' SVG loader in
process, in parallel and in bounded chunks; a broken icon is reported and skipped.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmgen.data.iconify_join import (  # noqa: F401  (normalise_name: re-exported)
    EmojiJoin,
    emoji_join_table,
    join_emoji_name,
    normalise_name,
)
from mmgen.data.records import Record, read_json_file
from mmgen.errors import DataError

# The emoji styles DATA.md names for training, pinned (npm versions).
EMOJI_SETS: dict[str, str] = {
    "fluent-emoji": "1.2.7",
    "fluent-emoji-flat": "1.2.6",
    "fluent-emoji-high-contrast": "1.2.6",
    "emojione": "1.2.3",
    "emojione-monotone": "1.2.1",
    "emojione-v1": "1.2.3",
    "fxemoji": "1.2.2",
    "streamline-emojis": "1.2.4",
}
# Named (monochrome) icon sets with an open licence, pinned.
ICON_SETS: dict[str, str] = {
    "mdi": "1.2.3",
    "material-symbols": "1.2.98",
    "tabler": "1.2.41",
    "lucide": "1.2.137",
    "ph": "1.2.2",
    "game-icons": "1.2.4",
    "healthicons": "1.2.13",
    "carbon": "1.2.29",
    "fa6-solid": "1.2.4",
    "maki": "1.2.5",
}
PNG_SIDE = 128
RENDER_VERSION = 1  # bump when rendering changes, so cached PNGs are redrawn
RENDER_CHUNK = 512  # icons in flight at once (bounded memory)
FETCH_HINT = "run `mmgen data fetch {what}`"
# Suffixes that mark a style of one concept in any set (set metadata may declare more).
GENERIC_VARIANTS: tuple[str, ...] = ("outline", "outlined", "filled", "fill", "sharp", "rounded", "duotone", "solid")
# Extra variant suffixes of particular sets (maki's pixel sizes, ...).
SET_VARIANTS: dict[str, tuple[str, ...]] = {"maki": ("11", "15")}
_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,199}$")


def package_name(prefix: str) -> str:
    """The npm package of an Iconify set."""
    return f"@iconify-json/{prefix}"


def package_dir(data_dir: Path, prefix: str) -> Path:
    """Where `mmgen data fetch` installs an Iconify set."""
    return Path(data_dir) / "npm" / "node_modules" / "@iconify-json" / prefix


def png_dir(data_dir: Path, prefix: str) -> Path:
    """Where an Iconify set's icons are rendered to PNG."""
    return Path(data_dir) / "iconify" / prefix


def is_emoji_set(prefix: str, info: dict[str, Any] | None = None) -> bool:
    """True for the emoji styles (joined to code points) rather than named icon sets."""
    return prefix in EMOJI_SETS or (info is not None and str(info.get("category") or "") == "Emoji")


@dataclass
class IconSet:
    """One parsed Iconify set."""

    prefix: str
    icons: dict[str, dict[str, Any]]
    aliases: dict[str, dict[str, Any]]
    width: float
    height: float
    info: dict[str, Any] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)  # icon name -> categories
    suffixes: tuple[str, ...] = ()  # declared variant suffixes, longest first
    version: str | None = None

    @property
    def licence(self) -> str:
        """The set's licence as `SPDX (set name, author)`."""
        lic = self.info.get("license") if isinstance(self.info.get("license"), dict) else {}
        author_info = self.info.get("author")
        author = author_info.get("name") if isinstance(author_info, dict) else None
        spdx = lic.get("spdx") or lic.get("title") or "unknown licence"
        who = ", ".join(x for x in (self.info.get("name"), author) if x)
        return f"{spdx} ({who})" if who else str(spdx)

    def names(self) -> list[str]:
        """Every drawable name: the icons, then aliases that transform their parent (flips, turns)."""
        out = list(self.icons)
        out += [a for a, spec in self.aliases.items() if _has_transform(spec) and a not in self.icons]
        return out

    def alias_names(self, name: str) -> list[str]:
        """The plain aliases (other names, same drawing) of an icon."""
        return [a for a, spec in self.aliases.items() if spec.get("parent") == name and not _has_transform(spec)]

    def svg(self, name: str, side: int = PNG_SIDE) -> str:
        """A standalone SVG document of one icon (aliases resolved), sized to fit side x side."""
        body, box, flips = self._resolve(name, 0)
        left, top, width, height = box
        h_flip, v_flip, turns = flips
        transforms = []
        if turns % 4:
            transforms.append(f"rotate({90 * (turns % 4)} {left + width / 2} {top + height / 2})")
        if h_flip or v_flip:
            tx = 2 * left + width if h_flip else 0
            ty = 2 * top + height if v_flip else 0
            transforms.append(f"translate({tx} {ty}) scale({-1 if h_flip else 1} {-1 if v_flip else 1})")
        if transforms:
            body = f'<g transform="{" ".join(transforms)}">{body}</g>'
        scale = side / max(width, height, 1e-9)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{w}" height="{h}" viewBox="{left} {top} {width} {height}">{body}</svg>'
        )

    def _resolve(
        self, name: str, depth: int
    ) -> tuple[str, tuple[float, float, float, float], tuple[bool, bool, int]]:
        if depth > 8:
            raise DataError(f"{self.prefix}:{name}: alias chain too long")
        if name in self.icons:
            icon = self.icons[name]
            body = icon.get("body")
            if not isinstance(body, str):
                raise DataError(f"{self.prefix}:{name}: icon has no SVG body")
            box = (
                float(icon.get("left", 0)),
                float(icon.get("top", 0)),
                float(icon.get("width", self.width)),
                float(icon.get("height", self.height)),
            )
            return body, box, (bool(icon.get("hFlip")), bool(icon.get("vFlip")), int(icon.get("rotate", 0)))
        spec = self.aliases.get(name)
        if spec is None or not isinstance(spec.get("parent"), str):
            raise DataError(f"{self.prefix}:{name}: no such icon")
        body, box, (h, v, r) = self._resolve(spec["parent"], depth + 1)
        return body, box, (h ^ bool(spec.get("hFlip")), v ^ bool(spec.get("vFlip")), r + int(spec.get("rotate", 0)))


def _has_transform(spec: dict[str, Any]) -> bool:
    return bool(spec.get("hFlip") or spec.get("vFlip") or spec.get("rotate"))


def _read_json(path: Path, what: str) -> Any:
    return read_json_file(path, FETCH_HINT.format(what=what))


def load_set(data_dir: Path, prefix: str) -> IconSet:
    """Parse an installed Iconify set; DataError when it is missing or its JSON is malformed."""
    root = package_dir(data_dir, prefix)
    what = f"iconify:{prefix}"
    if not root.is_dir():
        raise DataError(f"Iconify set {prefix!r} is not fetched into {Path(data_dir)}: {FETCH_HINT.format(what=what)}")
    data = _read_json(root / "icons.json", what)
    if not isinstance(data, dict) or not isinstance(data.get("icons"), dict):
        raise DataError(f"{root / 'icons.json'}: malformed Iconify JSON (no 'icons' object)")
    info_path = root / "info.json"
    info = _read_json(info_path, what) if info_path.is_file() else data.get("info") or {}
    meta_path = root / "metadata.json"
    meta = _read_json(meta_path, what) if meta_path.is_file() else {}
    categories: dict[str, list[str]] = {}
    raw_categories = meta.get("categories") if isinstance(meta, dict) else None
    for cat, names in raw_categories.items() if isinstance(raw_categories, dict) else ():
        for n in names if isinstance(names, list) else ():
            categories.setdefault(str(n), []).append(str(cat))
    declared = [s for s in ((meta.get("suffixes") or {}) if isinstance(meta, dict) else {}) if s]
    version = None
    try:
        version = json.loads((root / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        pass
    aliases = data.get("aliases") if isinstance(data.get("aliases"), dict) else {}
    try:
        width, height = float(data.get("width", 16)), float(data.get("height", 16))
    except (TypeError, ValueError) as e:
        raise DataError(f"{root / 'icons.json'}: malformed default size ({e})") from e
    if not (0 < width < 1e6 and 0 < height < 1e6):
        raise DataError(f"{root / 'icons.json'}: default size must be positive, not {width} x {height}")
    return IconSet(
        prefix=prefix,
        icons={str(k): v for k, v in data["icons"].items() if isinstance(v, dict)},
        aliases={str(k): v for k, v in aliases.items() if isinstance(v, dict)},
        width=width,
        height=height,
        info=info if isinstance(info, dict) else {},
        categories=categories,
        suffixes=tuple(sorted(declared, key=len, reverse=True)),
        version=version if isinstance(version, str) else None,
    )


# ---- rendering -----------------------------------------------------------------------------
def render_svg(svg: str) -> bytes:
    """Render one sized SVG document to PNG bytes in process; DataError on failure."""
    from mmgen.data.images import render_svg_buffer

    return render_svg_buffer(svg.encode("utf-8"))


def _png_path(out_dir: Path, name: str) -> Path:
    if _SAFE_NAME.match(name):
        return out_dir / f"{name}.png"
    import hashlib

    return out_dir / f"_{hashlib.sha1(name.encode()).hexdigest()[:16]}.png"


def icon_png(data_dir: Path, prefix: str, name: str) -> Path:
    """The rendered PNG path of one icon (it may not exist yet)."""
    return _png_path(png_dir(data_dir, prefix), name)


def render_set(
    data_dir: Path, prefix: str, side: int = PNG_SIDE, workers: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Render every icon of a set once (cached; stale caches redrawn); report failures, never stop on one."""
    iset = load_set(data_dir, prefix)
    out = png_dir(data_dir, prefix)
    out.mkdir(parents=True, exist_ok=True)
    stamp_path = out / ".render.json"
    stamp = {"version": iset.version, "side": side, "render": RENDER_VERSION}
    try:
        fresh = json.loads(stamp_path.read_text(encoding="utf-8")) == stamp
    except (OSError, ValueError):
        fresh = False
    names = iset.names()
    todo = names if not fresh else [n for n in names if not _png_path(out, n).is_file()]
    failures: list[tuple[str, str]] = []

    def work(name: str) -> tuple[str, str | None]:
        try:
            png = render_svg(iset.svg(name, side))
        except DataError as e:
            return name, str(e)
        except (TypeError, ValueError) as e:  # a field of the wrong type in the set's JSON
            return name, f"malformed icon ({e})"
        target = _png_path(out, name)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".png", dir=out)
        with os.fdopen(fd, "wb") as f:
            f.write(png)
        os.replace(tmp, target)
        return name, None

    from tqdm.auto import tqdm

    n_workers = workers or max(2, os.cpu_count() or 2)
    with (
        ThreadPoolExecutor(max_workers=n_workers) as pool,
        tqdm(total=len(todo), desc=f"render {prefix}", unit="icon", disable=not progress or not todo) as bar,
    ):
        for start in range(0, len(todo), RENDER_CHUNK):
            for name, reason in pool.map(work, todo[start : start + RENDER_CHUNK]):
                if reason is not None:
                    failures.append((name, reason))
                bar.update(1)
    (out / ".failures.json").write_text(json.dumps(dict(failures), indent=1) + "\n", encoding="utf-8")
    stamp_path.write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    return {
        "icons": len(names),
        "rendered": len(todo) - len(failures),
        "up_to_date": len(names) - len(todo),
        "failed": len(failures),
        "failures": [f"{n}: {r}" for n, r in failures[:5]],
        "version": iset.version,
        "licence": iset.licence,
    }


def _render_failures(data_dir: Path, prefix: str) -> dict[str, str]:
    try:
        out = json.loads((png_dir(data_dir, prefix) / ".failures.json").read_text(encoding="utf-8"))
        return out if isinstance(out, dict) else {}
    except (OSError, ValueError):
        return {}


def check_rendered(data_dir: Path, prefix: str) -> None:
    """Raise DataError, naming the fetch command, when a set is not installed and rendered."""
    load_set(data_dir, prefix)
    if not (png_dir(data_dir, prefix) / ".render.json").is_file():
        raise DataError(f"Iconify set {prefix!r} is not rendered: {FETCH_HINT.format(what=f'iconify:{prefix}')}")


# ---- emoji styles --------------------------------------------------------------------------
def emoji_set_records(data_dir: Path, prefix: str, table: EmojiJoin | None = None) -> Iterator[Record]:
    """One record per icon of an emoji style; joined icons carry the code-point group and OpenMoji's text."""
    from mmgen.data import emoji

    iset = load_set(data_dir, prefix)
    table = table if table is not None else emoji_join_table(data_dir)
    failures = _render_failures(data_dir, prefix)
    for name in iset.names():
        code, how = join_emoji_name(name, iset.alias_names(name), table)
        meta: dict[str, Any] = {"style": prefix, "icon": name, "joined": code is not None, "join": how}
        if code is not None and code in table.openmoji:
            text, shared = emoji._openmoji_fields(table.openmoji[code], code, table.unicode_names)
            meta.update(shared)
            group = code
        elif code is not None:
            text = table.twemoji_names.get(code, words_of(name))
            tone = emoji._tone_of(code)
            meta.update(
                tags=[], skintone=tone if tone is not None else False, is_flag=emoji._is_flag_codes(code),
                is_extra=False, is_component=False, base=tone is None, captions=[text],
            )  # fmt: skip
            group = code
        else:
            text = words_of(name)
            meta.update(base=False, is_flag=False, is_extra=True, captions=[text], kind="icon")
            group = f"icon:{'-'.join(text.split())}"
        meta["categories"] = iset.categories.get(name, [])
        yield _icon_record(data_dir, prefix, name, text, group, meta, failures)


def _icon_record(
    data_dir: Path, prefix: str, name: str, text: str, group: str, meta: dict[str, Any], failures: dict[str, str]
) -> Record:
    png = icon_png(data_dir, prefix, name)
    if name in failures:
        return Record(key=name, text=text, group=group, meta=meta, error=f"icon failed to render: {failures[name]}")
    if not png.is_file():
        hint = FETCH_HINT.format(what=f"iconify:{prefix}")
        return Record(key=name, text=text, group=group, meta=meta, error=f"image not found: {png} ({hint})")
    return Record(key=name, image=str(png.resolve()), text=text, group=group, meta=meta)


def join_coverage(data_dir: Path, prefix: str, table: EmojiJoin | None = None) -> dict[str, Any]:
    """How many icons of an emoji style joined to code points, and to how many base concepts."""
    iset = load_set(data_dir, prefix)
    table = table if table is not None else emoji_join_table(data_dir)
    joined: dict[str, int] = {}
    codes: set[str] = set()
    base: set[str] = set()
    for name in iset.names():
        code, how = join_emoji_name(name, iset.alias_names(name), table)
        joined[how] = joined.get(how, 0) + 1
        if code is not None:
            codes.add(code)
            row = table.openmoji.get(code)
            if row is None or not row.get("skintone"):
                base.add(code)
    n = len(iset.names())
    hit = n - joined.get("none", 0)
    return {"icons": n, "joined": hit, "share": round(hit / n, 4) if n else 0.0, "by": joined,
            "concepts": len(codes), "base_concepts": len(base)}  # fmt: skip


# ---- named icon sets -----------------------------------------------------------------------
def words_of(name: str) -> str:
    """An icon name as words: `account-circle` -> `account circle`."""
    return " ".join(t for t in re.split(r"[-_\s]+", name) if t)


def split_variant(name: str, iset: IconSet) -> tuple[str, str | None]:
    """(concept name, variant suffix or None): `robot-outline` -> (`robot`, `outline`)."""
    suffixes = list(iset.suffixes) + [*GENERIC_VARIANTS, *SET_VARIANTS.get(iset.prefix, ())]
    for suffix in sorted(set(suffixes), key=len, reverse=True):
        if name.endswith(f"-{suffix}") and len(name) > len(suffix) + 1:
            return name[: -len(suffix) - 1], suffix
    return name, None


def concept_key(words: str) -> str:
    """The group of a named icon concept: the same normalised name in every set is one group."""
    return "icon:" + "-".join(re.sub(r"[^a-z0-9 ]", " ", words.lower()).split())


def icon_set_records(data_dir: Path, prefix: str) -> Iterator[Record]:
    """One record per icon of a named set: caption = name words (+ aliases, + categories)."""
    iset = load_set(data_dir, prefix)
    failures = _render_failures(data_dir, prefix)
    for name in iset.names():
        concept, variant = split_variant(name, iset)
        text = words_of(concept)
        cats = iset.categories.get(name) or iset.categories.get(concept) or []
        alias_words = []
        for a in iset.alias_names(name):
            w = words_of(split_variant(a, iset)[0])
            if w and w != text and w not in alias_words:
                alias_words.append(w)
        captions = [text, *alias_words]
        captions += [f"{text}, {c.lower()}" for c in cats[:2]]
        meta: dict[str, Any] = {
            "style": prefix,
            "icon": name,
            "kind": "icon",
            "variant": variant,
            "aliases": alias_words,
            "categories": cats,
            "captions": captions,
            "base": False,
            "is_flag": False,
        }
        yield _icon_record(data_dir, prefix, name, text, concept_key(text), meta, failures)


def set_records(data_dir: Path, prefix: str, info: dict[str, Any] | None = None) -> Callable[[], Iterator[Record]]:
    """The record loader of any Iconify set: emoji styles are joined, other sets are named icons."""
    if is_emoji_set(prefix, info):
        return lambda: emoji_set_records(data_dir, prefix)
    return lambda: icon_set_records(data_dir, prefix)
