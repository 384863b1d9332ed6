"""OpenClipart (Debian openclipart-svg/-png): one record per distinct drawing, captioned from SVG metadata."""

from __future__ import annotations

import html
import json
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmgen.data.records import Record
from mmgen.errors import DataError

DEFAULT_ROOT = Path("/usr/share/openclipart")
ENV_ROOT = "MMGEN_OPENCLIPART_DIR"
LOCATION_FILE = "openclipart.json"
FETCH_HINT = "run `mmgen data fetch openclipart`"
LICENCE = "public domain (OpenClipart dedication); a handful GPL-2.0"
# A title on at least this many drawings names a collection, not the picture.
COMMON_TITLE_MIN = 5
MAX_CAPTION_WORDS = 12
MAX_DESCRIPTION_WORDS = 8
_HEAD_BYTES = 1 << 16

_DC = "{http://purl.org/dc/elements/1.1/}"
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_CC = "{http://web.resource.org/cc/}"
_NOISE_TITLE = re.compile(
    r"^(gramastar|cards?|various cliparts?|sallite|untitled|image|drawing|clipart|svg)$"
    r"|part of the .*collection|\btheme\b|iconset|icon set|^clip ?art by\b|s[iu]bmission",
    re.IGNORECASE,
)
_NOISE_WORDS = frozenset(
    "hash magick theme themes lemon_theme_icon svg png eps clipart cliparts various unsorted "
    "mapsym aiga collection iconset vector vectorized inkscape openclipart http https www".split()
)
_STOPWORDS = frozenset("a an the of and or with in on at for to is this it its by from de di la le du".split())
_STAR = re.compile(r"^star_0*(\d+)pt0*(\d+)step$")
_CARD = re.compile(r"^([a-z]+)_(c|d|h|s|jk)_(10|[2-9]|[ajqkbr])$")
_SUITS = {"c": "clubs", "d": "diamonds", "h": "hearts", "s": "spades"}
_RANKS = {"a": "ace", "j": "jack", "q": "queen", "k": "king"}
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_TOKEN_SPLIT = re.compile(r"[\s_\-./,;:()\[\]#+&]+")
_JUNK_TOKEN = re.compile(r"^(0x[0-9a-f]+|\d+)$")
_BW = re.compile(r"\bb ?(?:and|&|/|n) ?w\b", re.IGNORECASE)
_NUMBERED = re.compile(r"^\d+[a-z]{0,2}$")  # "01", "06b", "1m", "10cm": series ids and sizes
_TRAILING_ID = re.compile(r"(?:(?<=[a-z]{3})|[\s#_-]+)\d+[a-z]?$", re.IGNORECASE)


@dataclass
class SvgMeta:
    """Text found in an OpenClipart SVG's <metadata> block."""

    title: str = ""
    keywords: list[str] = field(default_factory=list)
    description: str = ""
    creator: str = ""
    licence_url: str = ""
    parsed: bool = True


def openclipart_root(data_dir: Path | None = None) -> Path:
    """Return the OpenClipart folder: $MMGEN_OPENCLIPART_DIR, else the one fetch recorded, else the Debian one."""
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser()
    if data_dir is not None:
        loc = Path(data_dir) / LOCATION_FILE
        if loc.is_file():
            try:
                recorded = json.loads(loc.read_text(encoding="utf-8")).get("root")
            except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
                raise DataError(f"{loc}: unreadable ({e}); delete it and {FETCH_HINT}") from e
            if recorded:
                return Path(recorded)
    return DEFAULT_ROOT


def check_fetched(root: Path) -> None:
    """Raise DataError naming the fetch command when root lacks the png/ and svg/ trees."""
    for sub in ("png", "svg"):
        if not (root / sub).is_dir():
            raise DataError(f"OpenClipart is not installed ({root / sub} is missing): {FETCH_HINT}")


def parse_svg_metadata(path: Path) -> SvgMeta:
    """Read title, keywords, description, creator and licence from an SVG's <metadata>, stopping there."""
    try:
        meta_el = _find_metadata(path)
    except (ET.ParseError, OSError, ValueError):
        return SvgMeta(parsed=False)
    if meta_el is None:
        return SvgMeta()
    work = next(meta_el.iter(f"{_CC}Work"), meta_el)
    out = SvgMeta()
    for child in work:
        if child.tag == f"{_DC}title":
            out.title = _text(child)
        elif child.tag == f"{_DC}description":
            out.description = _text(child)
        elif child.tag == f"{_DC}subject":
            out.keywords = [kw for li in child.iter(f"{_RDF}li") if (kw := _text(li))]
            if not out.keywords and _text(child):
                out.keywords = [k.strip() for k in _text(child).split(",") if k.strip()]
        elif child.tag == f"{_DC}creator":
            names = [_text(t) for t in child.iter(f"{_DC}title")]
            out.creator = next((n for n in names if n), _text(child))
        elif child.tag == f"{_CC}license":
            out.licence_url = child.get(f"{_RDF}resource", "") or _text(child)
    return out


def _find_metadata(path: Path) -> ET.Element | None:
    """Return the <metadata> element, parsing only up to its end tag when it sits near the top."""
    with path.open("rb") as f:
        head = f.read(_HEAD_BYTES)
        end = head.find(b"</metadata>")
        if end < 0:
            end = head.find(b":metadata>")  # a prefixed <svg:metadata>
        if end >= 0:
            parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("end",))
            parser.feed(head[: head.index(b">", end) + 1])
            for event in parser.read_events():
                if isinstance(el := event[-1], ET.Element) and _is_metadata(el):
                    return el
        f.seek(0)
        for event in ET.iterparse(f, events=("end",)):
            if isinstance(el := event[-1], ET.Element) and _is_metadata(el):
                return el
    return None


def _is_metadata(el: ET.Element) -> bool:
    return el.tag == "metadata" or el.tag.endswith("}metadata")


def _text(el: ET.Element) -> str:
    return " ".join((el.text or "").split())


def licence_name(url: str) -> str:
    """Map a cc:license URL to a short licence name."""
    low = url.lower()
    if not low or "publicdomain" in low or "zero" in low:
        return "public-domain"
    if "gpl" in low:
        return "GPL-2.0" if "2.0" in low else "GPL"
    return url


def _words(text: str) -> list[str]:
    text = _CAMEL.sub(" ", text)
    return [w for w in _TOKEN_SPLIT.split(text.lower()) if w]


def _norm(word: str) -> str:
    """Compare words loosely: case-folded, simple plural stripped."""
    w = word.lower()
    if len(w) > 3 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def _is_noise_title(title: str, common: AbstractSet[str]) -> bool:
    t = " ".join(title.split()).lower()
    return not t or t in common or bool(_NOISE_TITLE.search(t))


def _clean_phrase(text: str) -> str:
    """Lower-case a title-like phrase; drop noise words and a trailing series id ("Woman Police 02")."""
    text = _BW.sub("black and white", html.unescape(text).replace("_", " "))
    text = _TRAILING_ID.sub("", " ".join(text.split()))
    words = [w for w in _words(text) if w not in _NOISE_WORDS]
    return " ".join(w for w in words if any(c.isalpha() for c in w) or len(words) > 1)


def _author_tokens(creator: str) -> set[str]:
    return {w for w in _words(creator) if len(w) >= 2}


def _stem_phrase(relpath: str, author: set[str], initials: str = "") -> str:
    """Turn a file stem into words: special cases for the star and card series, author names removed."""
    parts = relpath.replace("\\", "/").split("/")
    stem = parts[-1].rsplit(".", 1)[0] if "." in parts[-1] and parts[-1].endswith((".svg", ".png")) else parts[-1]
    if m := _STAR.match(stem):
        return f"{int(m.group(1))}-pointed star"
    if (m := _CARD.match(stem)) and "cards" in parts:
        suit, rank = m.group(2), m.group(3)
        if suit == "jk" and rank in ("b", "r"):
            return f"{'black' if rank == 'b' else 'red'} joker playing card"
        if suit in _SUITS and rank not in ("b", "r"):
            return f"{_RANKS.get(rank, rank)} of {_SUITS[suit]} playing card"
    tokens: list[str] = []
    for i, raw in enumerate(_words(stem)):
        w = re.sub(r"(?<=[a-z]{3})\d+$", "", raw)  # "home10" -> "home", but "m16", "db25" stay
        if not w or len(w) == 1 or _NUMBERED.match(w) or w in _NOISE_WORDS or (i > 0 and w == initials):
            continue
        if i > 0 and any(w == a or (len(w) >= 3 and a.startswith(w)) for a in author):
            break  # files are named title_author_NN: what follows the author is a series id
        tokens.append(w)
    return " ".join(tokens)


def _initials(creator: str) -> str:
    words = [w for w in _words(creator) if w.isalpha()]
    return "".join(w[0] for w in words) if len(words) >= 2 else ""


def _folder_words(relpath: str) -> list[str]:
    """Folder names below the category, minus theme/collection folders (`flat-theme`, `icons`)."""
    parts = relpath.replace("\\", "/").split("/")[1:-1]
    out: list[str] = []
    for part in parts:
        if _NOISE_TITLE.search(part.replace("-", " ")) or part.lower() in ("icons", "misc", "other"):
            continue
        out.append(" ".join(_words(part)))
    return out


class _Caption:
    """Accumulates comma-separated segments, skipping what adds no new word, up to a word budget."""

    def __init__(self, max_words: int) -> None:
        self.max_words = max_words
        self.segments: list[str] = []
        self.seen: set[str] = set()
        self.n_words = 0

    def add(self, phrase: str, *, whole: bool = True) -> bool:
        words = phrase.split()
        content = [w for w in words if w not in _STOPWORDS]
        new = [w for w in content if _norm(w) not in self.seen]
        if not new:
            return False
        if not whole and len(words) == 1 and _is_compound(words[0], self.seen):
            return False  # a keyword that is only present words glued together ("bullethole")
        if self.n_words + len(words) > self.max_words:
            return False
        self.segments.append(phrase)
        self.seen.update(_norm(w) for w in content)
        self.seen.update(w.lower() for w in content)
        self.n_words += len(words)
        return True

    def text(self) -> str:
        return ", ".join(self.segments)


def _is_compound(word: str, known: set[str]) -> bool:
    n = len(word)
    ok = [True] + [False] * n
    for end in range(1, n + 1):
        ok[end] = any(ok[start] and word[start:end] in known for start in range(max(0, end - 20), end - 2))
    return ok[n]


def build_caption(
    title: str,
    keywords: Iterable[str],
    description: str,
    relpath: str,
    common_titles: Iterable[str] = (),
    creator: str = "",
) -> tuple[str, str]:
    """Return (caption, source) where source is "title" when the title was specific, else "path"."""
    # common_titles() returns a frozenset already normalised; normalise anything else given.
    common = common_titles if isinstance(common_titles, frozenset) else common_titles_set(common_titles)
    author = _author_tokens(creator)
    parts = relpath.replace("\\", "/").split("/")
    category = parts[0].lower() if len(parts) > 1 else ""
    drop = {category, " ".join(_words(category))}
    cap = _Caption(MAX_CAPTION_WORDS)

    title_phrase = _clean_phrase(title) if title else ""
    specific = bool(title_phrase) and not _is_noise_title(title, common)
    source = "title" if specific else "path"
    if specific:
        cap.add(title_phrase)
    else:
        cap.add(_stem_phrase(relpath, author, _initials(creator)))
        # A shared but meaningful title ("stick man", "road signs") is still good context.
        if title_phrase and not _NOISE_TITLE.search(" ".join(title.split()).lower()):
            cap.add(title_phrase)

    desc = " ".join(description.split())
    desc_low = desc.lower()
    if (
        desc
        and desc_low not in common
        and desc_low != " ".join(title.split()).lower()
        and "http" not in desc_low
        and "converted from" not in desc_low
        and len(desc.split()) <= MAX_DESCRIPTION_WORDS
    ):
        cap.add(_clean_phrase(desc.rstrip(".")))

    creator_phrase = " ".join(_words(creator))
    for kw in keywords:
        if kw.strip().lower() in _NOISE_WORDS:
            continue
        phrase = " ".join(w for w in _words(kw) if w not in _NOISE_WORDS and not _JUNK_TOKEN.match(w))
        if not phrase or phrase in drop or _norm(phrase) in {_norm(d) for d in drop}:
            continue
        if phrase == creator_phrase or (" " in phrase and set(phrase.split()) <= author):
            continue  # the author's name, not the picture
        if len(phrase) > 16 and " " not in phrase:
            continue  # run-together junk like "tigerorangegreenvector"
        cap.add(phrase, whole=False)

    for folder in _folder_words(relpath):
        cap.add(folder, whole=False)

    if not cap.segments:
        fallback = " ".join(w for w in _words(parts[-1].rsplit(".", 1)[0]) if not w.isdigit())
        cap.add(fallback or category or "drawing")
    return cap.text(), source


def clean_caption(
    title: str,
    keywords: Iterable[str],
    description: str,
    relpath: str,
    common_titles: Iterable[str] = (),
    creator: str = "",
) -> str:
    """Build a short caption for one drawing from its metadata, dropping collection names and noise."""
    return build_caption(title, keywords, description, relpath, common_titles, creator)[0]


@dataclass
class _Drawing:
    key: str
    png: Path
    svg: Path | None
    aliases: list[str]
    meta: SvgMeta


def _scan(root: Path) -> list[_Drawing]:
    png_root = str(root / "png")
    svg_root = str(root / "svg")
    png_real_root = os.path.realpath(png_root)
    by_real: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(png_root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, png_root)
        for name in sorted(filenames):
            if not name.lower().endswith(".png"):
                continue
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            if not os.path.isfile(real):
                continue  # a dangling link
            rel = name[:-4] if rel_dir == "." else f"{rel_dir}/{name[:-4]}"
            by_real.setdefault(real, []).append(rel.replace(os.sep, "/"))
    drawings: list[_Drawing] = []
    for real, rels in by_real.items():
        if real.startswith(png_real_root + os.sep):
            key = os.path.relpath(real, png_real_root)[:-4].replace(os.sep, "/")
        else:
            key = min(rels)  # the link points outside the tree: keep the first path that names it
        svg = Path(svg_root, f"{key}.svg")
        svg_path = svg if svg.is_file() else None
        meta = parse_svg_metadata(svg_path) if svg_path is not None else SvgMeta(parsed=False)
        aliases = sorted(r for r in rels if r != key)
        drawings.append(_Drawing(key=key, png=Path(real), svg=svg_path, aliases=aliases, meta=meta))
    drawings.sort(key=lambda d: d.key)
    return drawings


def common_titles(titles: Iterable[str], min_count: int = COMMON_TITLE_MIN) -> frozenset[str]:
    """Return the (lower-cased) titles shared by at least min_count drawings: collection names."""
    counts = Counter(" ".join(t.split()).lower() for t in titles if t and t.strip())
    return frozenset(t for t, n in counts.items() if n >= min_count)


def common_titles_set(titles: Iterable[str]) -> frozenset[str]:
    """Normalise titles (whitespace collapsed, lower-cased) for membership tests."""
    return frozenset(" ".join(t.split()).lower() for t in titles)


def openclipart_records(root: Path) -> Iterator[Record]:
    """Yield one record per distinct OpenClipart drawing (symlinks resolved), captioned from its SVG."""
    check_fetched(root)
    drawings = _scan(root)
    # Count each drawing once even when its description repeats its title.
    per_drawing = (t for d in drawings for t in common_titles_set([d.meta.title, d.meta.description]))
    common = common_titles(per_drawing)
    for d in drawings:
        caption, source = build_caption(
            d.meta.title, d.meta.keywords, d.meta.description, d.key, common, d.meta.creator
        )
        meta: dict[str, Any] = {
            "category": d.key.split("/", 1)[0],
            "title": d.meta.title or None,
            "keywords": d.meta.keywords,
            "description": d.meta.description or None,
            "creator": d.meta.creator or None,
            "svg": str(d.svg) if d.svg is not None else None,
            "licence": licence_name(d.meta.licence_url),
            "caption_source": source,
            # the title named a collection ("gramastar", "Lemon SVG theme"): handy to filter series
            "collection": d.meta.title if source == "path" and d.meta.title else None,
            "aliases": d.aliases,
        }
        if not d.meta.parsed:
            meta["metadata_error"] = "SVG missing or not well-formed; caption built from the path"
        yield Record(key=d.key, image=str(d.png), text=caption, group=d.key, meta=meta)
