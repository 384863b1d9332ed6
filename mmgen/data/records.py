"""Records (one image and/or caption with a concept group) and the JSONL/CSV manifest format.

A manifest that gathers several corpora (`mmgen data manifest emoji`) names each record's corpus
(`corpus`) and qualifies its id as `CORPUS:KEY`, so ids stay unique where keys repeat across
corpora (`1F600` in every emoji style). `qualify` writes that form; `unqualify` gives back the key
the corpus itself uses, which is how `mmgen index` keys the item (unique per corpus).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmgen.errors import DataError

MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv")
# Columns with a fixed meaning; any other CSV column or JSON field goes into `meta`.
_KEY_FIELDS = ("id", "key")
_CORE_FIELDS = {"id", "key", "image", "text", "group", "meta", "corpus"}
_CSV_COLUMNS = ("id", "image", "text", "group", "meta", "corpus")
# Byte-order marks of encodings a manifest may be saved in by mistake (UTF-32 first: its LE mark starts like UTF-16's).
_OTHER_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


@dataclass
class Record:
    """One corpus item: an image, a caption or both, with the concept group it belongs to."""

    key: str
    image: str | None = None
    text: str | None = None
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    corpus: str | None = None  # set only in a manifest of several corpora: then `key` is `CORPUS:KEY`


def qualify(record: Record, corpus: str) -> Record:
    """The record as a manifest of several corpora holds it: id `CORPUS:KEY`, globally unique, and its corpus."""
    return replace(record, key=f"{corpus}:{record.key}", corpus=corpus)


def unqualify(record: Record) -> Record:
    """The record as its corpus keys it (the id without its `CORPUS:` prefix, no `corpus`): `qualify` undone."""
    if record.corpus is None:
        return record
    return replace(record, key=record.key.removeprefix(f"{record.corpus}:"), corpus=None)


def read_json_file(path: Path, fetch_hint: str) -> Any:
    """Parse a corpus's JSON file; DataError naming the fetch command when missing, or the parse error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DataError(f"{path} not found: {fetch_hint}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: malformed JSON ({e})") from e


def record_to_json(r: Record) -> dict[str, Any]:
    """Return the manifest form of a record: {"id", "image", "text", "group", "meta"}, None fields left out."""
    out: dict[str, Any] = {"id": r.key}
    if r.image is not None:
        out["image"] = r.image
    if r.text is not None:
        out["text"] = r.text
    if r.group is not None:
        out["group"] = r.group
    if r.meta:
        out["meta"] = r.meta
    if r.corpus is not None:
        out["corpus"] = r.corpus
    if r.error is not None:
        out["error"] = r.error
    return out


def read_records(path: str | Path) -> Iterator[Record]:
    """Yield the records of a .jsonl/.json or .csv manifest; a malformed line becomes an error record."""
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise DataError(f"unsupported manifest format {p.suffix!r} ({p}); expected .jsonl, .json or .csv")
    if not p.is_file():
        raise DataError(f"manifest not found: {p}")
    _check_not_utf16(p)
    base = p.resolve().parent
    if suffix == ".csv":
        yield from _read_csv(p, base)
    elif suffix == ".json" and _starts_with_bracket(p):
        yield from _read_json_array(p, base)
    else:
        yield from _read_jsonl(p, base)


def write_records(records: Iterable[Record], path: str | Path) -> int:
    """Write records as JSON Lines (or CSV for a .csv path), image paths as given; return the count written.

    Records carrying an `error` are not data and are skipped.
    """
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise DataError(f"unsupported manifest format {p.suffix!r} ({p}); expected .jsonl, .json or .csv")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f) if suffix == ".csv" else None
            if writer is not None:
                writer.writerow(_CSV_COLUMNS)
            for r in records:
                if r.error is not None:
                    continue
                if writer is not None:
                    meta = json.dumps(r.meta, ensure_ascii=False, sort_keys=True) if r.meta else ""
                    writer.writerow([r.key, r.image or "", r.text or "", r.group or "", meta, r.corpus or ""])
                else:
                    f.write(json.dumps(record_to_json(r), ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _check_not_utf16(p: Path) -> None:
    """DataError for a UTF-16/32 file: read as UTF-8 every line would fail, one confusing error each."""
    with p.open("rb") as f:
        head = f.read(4)
    for bom, encoding in _OTHER_BOMS:
        if head.startswith(bom):
            raise DataError(f"{p}: manifest is {encoding} text; save it as UTF-8")


def _json_failure(e: ValueError | RecursionError) -> str:
    """Why json.loads failed, in a line: besides syntax, Python refuses deep nesting and giant integers."""
    if isinstance(e, json.JSONDecodeError):
        return e.msg
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return "an integer with too many digits"


_SURROGATE = "text with an unpaired surrogate (a lone \\ud800-\\udfff escape) is not valid Unicode"


def _not_storable(record: Record) -> str | None:
    """Why a parsed record cannot be stored as JSON text, or None.

    Python's json reads NaN, Infinity and 1e400 (as inf) and `\\ud800` escapes (lone surrogates),
    but neither is valid JSON or UTF-8: the store would refuse the row later, mid-index.
    """
    strings = (record.key, record.image, record.text, record.group, record.corpus, record.error)
    if not record.meta and all(v is None or type(v) is str for v in strings):  # most records: no JSON to write
        if all(v is None or _is_utf8(v) for v in strings):
            return None
        return _SURROGATE
    try:
        json.dumps(record_to_json(record), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE
    except ValueError:
        return "NaN or Infinity (or a number too large for a float) is not valid JSON"
    except RecursionError:
        return "nested too deeply"
    return None


def _is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _starts_with_bracket(p: Path) -> bool:
    with p.open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def _has_surrogates(s: str) -> bool:
    # Text read with errors="surrogateescape" keeps undecodable bytes as lone surrogates.
    return any("\udc80" <= ch <= "\udcff" for ch in s)


class _Builder:
    """Turns raw manifest rows into records: resolves paths, checks types, catches duplicate ids."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.seen: dict[tuple[str | None, str], int] = {}  # (corpus, id): ids are unique per corpus

    def error(self, n: int, reason: str, key: str | None = None) -> Record:
        return Record(key=key or f"line-{n}", error=f"line {n}: {reason}")

    def build(self, n: int, row: dict[str, Any]) -> Record:
        key_raw = next((row[k] for k in _KEY_FIELDS if row.get(k) not in (None, "")), None)
        if key_raw is None:
            key = f"line-{n}"
        elif isinstance(key_raw, (str, int)) and not isinstance(key_raw, bool):
            key = str(key_raw)
        else:
            return self.error(n, f"'id' must be a string, got {type(key_raw).__name__}")
        values: dict[str, str | None] = {}
        for name in ("image", "text", "group", "corpus"):
            v = row.get(name)
            if v is None or v == "":
                values[name] = None
            elif name == "group" and isinstance(v, int) and not isinstance(v, bool):
                values[name] = str(v)
            elif isinstance(v, str):
                values[name] = v
            else:
                return self.error(n, f"{name!r} must be a string, got {type(v).__name__}", key)
        meta_raw = row.get("meta")
        if meta_raw is None or meta_raw == "":
            meta: dict[str, Any] = {}
        elif isinstance(meta_raw, dict):
            meta = dict(meta_raw)
        elif isinstance(meta_raw, str):
            try:
                parsed = json.loads(meta_raw)
            except (ValueError, RecursionError) as e:
                return self.error(n, f"'meta' is not valid JSON ({_json_failure(e)})", key)
            if not isinstance(parsed, dict):
                return self.error(n, "'meta' must be a JSON object", key)
            meta = parsed
        else:
            return self.error(n, f"'meta' must be an object, got {type(meta_raw).__name__}", key)
        for k, v in row.items():
            if k not in _CORE_FIELDS and k is not None and v not in (None, ""):
                meta.setdefault(k, v)
        if values["image"] is None and values["text"] is None:
            return self.error(n, "record has neither 'image' nor 'text'", key)
        unusable = _not_storable(Record(key=key, meta=meta, **values))
        if unusable is not None:
            return self.error(n, unusable, key if _is_utf8(key) else None)
        where = (values["corpus"], key)
        if where in self.seen:
            return self.error(n, f"duplicate id {key!r} (first on line {self.seen[where]})", f"line-{n}")
        self.seen[where] = n
        image = values["image"]
        if image is not None:
            try:
                ip = Path(image).expanduser()
            except RuntimeError:  # `~name/...` for a user without a home folder
                return self.error(n, f"'image' {image!r}: cannot expand '~' (no such user or home folder)", key)
            image = str(ip if ip.is_absolute() else self.base / ip)
        return Record(key=key, image=image, text=values["text"], group=values["group"], meta=meta,
                      corpus=values["corpus"])  # fmt: skip


def _read_jsonl(p: Path, base: Path) -> Iterator[Record]:
    b = _Builder(base)
    with p.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield b.error(n, "not valid UTF-8")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield b.error(n, f"invalid JSON ({e.msg} at column {e.colno})")
                continue
            except (ValueError, RecursionError) as e:
                yield b.error(n, f"invalid JSON ({_json_failure(e)})")
                continue
            if not isinstance(obj, dict):
                yield b.error(n, f"expected a JSON object, got {type(obj).__name__}")
                continue
            yield b.build(n, obj)


def _read_json_array(p: Path, base: Path) -> Iterator[Record]:
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not valid UTF-8 ({e.reason})") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: invalid JSON ({e.msg} at line {e.lineno})") from e
    except (ValueError, RecursionError) as e:
        raise DataError(f"{p}: invalid JSON ({_json_failure(e)})") from e
    b = _Builder(base)
    for n, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            yield b.error(n, f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield b.build(n, obj)


class _QuotedLines:
    """The lines of a CSV file, counted, with the parity of quotes since the last complete row.

    After a csv.Error (a field over `csv.field_size_limit()`) the reader starts afresh on the
    next line; if that line is inside the quoted field, its rest would read as rows of their own.
    `skip_open_quote` skips to the line that closes the quote instead.
    """

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.line_num = 0
        self.open_quote = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.line_num += 1
        if line.count('"') % 2:
            self.open_quote = not self.open_quote
        return line

    def row_done(self) -> None:
        self.open_quote = False

    def skip_open_quote(self) -> None:
        while self.open_quote:
            try:
                next(self)
            except StopIteration:
                return


def _read_csv(p: Path, base: Path) -> Iterator[Record]:
    b = _Builder(base)
    with p.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        lines = _QuotedLines(f)
        reader = csv.reader(lines)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{p}: unreadable CSV header ({e})") from e
        columns = [c.strip().lower() for c in header]
        if not any(c in ("image", "text") for c in columns):
            raise DataError(f"{p}: CSV header needs an 'image' or 'text' column, got {header}")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                n = lines.line_num
                lines.skip_open_quote()
                lines.row_done()
                yield b.error(n, f"malformed CSV ({e})")
                continue
            lines.row_done()
            n = lines.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                yield b.error(n, f"expected {len(columns)} columns, got {len(row)}")
                continue
            if any(_has_surrogates(cell) for cell in row):
                yield b.error(n, "not valid UTF-8")
                continue
            yield b.build(n, dict(zip(columns, row, strict=True)))
