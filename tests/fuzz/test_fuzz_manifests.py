"""Fuzz the manifest readers (`read_records`, JSONL, JSON and CSV): every line gives a record or a typed error.

Each example writes a manifest of good lines mixed with bad ones (odd JSON types, deep nesting,
huge fields and numbers, NaN, lone surrogates, Latin-1 bytes, duplicates, blank lines, a truncated
last line), in a random encoding and line ending. The property: reading it raises nothing but
`DataError`, and that only for a whole-file problem (UTF-16/32 text); every good line comes back
as its record, in order, and every bad line as a record whose `error` names its line.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmgen.data.records import Record, read_records
from mmgen.errors import DataError

CSV_FIELD_LIMIT = csv.field_size_limit()
NO_HOME = "~mmgen-fuzz-no-such-user/x.png"


@dataclass
class Line:
    """One manifest row as bytes (no line ending) and what the reader must make of it."""

    raw: bytes
    expect: str  # "good", "error", "either" (a record, with or without error) or "blank" (nothing)
    key: str | None = None  # the id of a good row
    text: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    image: str | None = None  # as written in the manifest


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("manifests").resolve()


# ---- values ----------------------------------------------------------------------------------
KEYS = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)
TEXTS = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    st.sampled_from(["a cat", "π ≈ 3.14", "emoji 😀 and \u200d joiner", "tab\tand\nnewline", 'say "hi", ok']),
    st.integers(1, 3).map(lambda k: "x" * (k * 150_000)),  # huge: fine in JSON, over the CSV field limit
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)
METAS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)
IMAGES = st.one_of(st.none(), st.sampled_from(["a.png", "sub/b c.jpg", "/abs/d.webp", "ü/ñ.png", "x\x00y.png"]))
NOT_TEXT = st.one_of(
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2),
)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# ---- JSONL -----------------------------------------------------------------------------------
@st.composite
def jsonl_line(draw: st.DrawFn, n: int) -> Line:
    """Line `n` of a JSONL manifest: good, or one of the ways a line goes wrong."""
    key = f"k{n}-{draw(KEYS)}"
    kind = draw(
        st.sampled_from(
            ["good", "good", "good", "int-id", "no-id", "bad-type", "deep", "big-int", "nan", "surrogate",
             "latin-1", "garbage", "not-object", "no-content", "duplicate", "blank", "no-home"]
        )
    )  # fmt: skip
    text = draw(TEXTS)
    meta = draw(METAS)
    image = draw(IMAGES)
    obj: dict[str, Any] = {"id": key, "text": text}
    if meta:
        obj["meta"] = meta
    if image is not None:
        obj["image"] = image
    if draw(st.booleans()):
        obj["extra"] = draw(SCALARS.filter(lambda v: v not in (None, "")))
    # other fields join `meta`, whose own keys win
    good = Line(b"", "good", key, text, {**({"extra": obj["extra"]} if "extra" in obj else {}), **meta}, image)

    def dump(o: Any) -> bytes:
        return json.dumps(o, ensure_ascii=draw(st.booleans())).encode("utf-8")

    if kind == "good":
        good.raw = dump(obj)
        return good
    if kind == "int-id":
        obj["id"] = 10**6 + n
        good.key, good.raw = str(10**6 + n), dump(obj)
        return good
    if kind == "no-id":  # no id (or an empty one): the record is keyed by its line
        obj["id"] = draw(st.sampled_from([None, ""]))
        good.key, good.raw = f"line-{n}", dump(obj)
        return good
    if kind == "bad-type":
        name = draw(st.sampled_from(["id", "text", "image", "group", "meta"]))
        bad = draw(NOT_TEXT.filter(lambda v: not (name == "meta" and isinstance(v, dict))))
        if name == "group" and isinstance(bad, int) and not isinstance(bad, bool):
            bad = float(bad) + 0.5  # an integer group is accepted
        return Line(dump({**obj, name: bad}), "error")
    if kind == "deep":
        depth = draw(st.sampled_from([5, 50, 5_000, 100_000]))
        raw = dump(obj)[:-1] + b', "deep": ' + _nested(depth).encode() + b"}"
        return Line(raw, "either" if depth < 5_000 else "error")
    if kind == "big-int":
        raw = dump(obj)[:-1] + b', "n": ' + b"7" * draw(st.integers(4_400, 20_000)) + b"}"
        return Line(raw, "error")
    if kind == "nan":
        raw = dump(obj)[:-1] + b', "n": ' + draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400"])) + b"}"
        return Line(raw, "error")
    if kind == "surrogate":
        where = draw(st.sampled_from(["id", "text", "meta"]))
        escaped = draw(st.sampled_from(["\\ud800", "\\udfff", "a\\udc80b"]))
        raw = dump({**obj, where: "@@"}).replace(b'"@@"', b'"' + escaped.encode() + b'"')
        if where == "meta":
            raw = raw.replace(b'"' + escaped.encode() + b'"', b'{"s": "' + escaped.encode() + b'"}')
        return Line(raw, "error")
    if kind == "latin-1":  # a Latin-1 encoded line in a UTF-8 file: invalid UTF-8 bytes
        word = draw(st.text(st.characters(min_codepoint=0xC0, max_codepoint=0xFF), min_size=1, max_size=5))
        return Line(json.dumps({"id": key, "text": word}, ensure_ascii=False).encode("latin-1", "replace"), "error")
    if kind == "garbage":
        one_line = st.binary(min_size=1, max_size=30).filter(lambda b: b.strip() and b"\n" not in b and b"\r" not in b)
        junk = draw(one_line)
        return Line(b"{" + junk, "error")  # an unclosed object, whatever follows
    if kind == "not-object":
        return Line(dump(draw(st.one_of(st.lists(SCALARS, max_size=2), SCALARS))), "error")
    if kind == "no-content":
        return Line(dump({"id": key, "group": "g", "text": "", "meta": meta}), "error")
    if kind == "duplicate":
        return Line(dump({"id": "dup", "text": "t"}), "dup")
    if kind == "no-home":
        return Line(dump({**obj, "image": NO_HOME}), "error")
    return Line(draw(st.sampled_from([b"", b"   ", b"\t", b" \t "])), "blank")


@st.composite
def jsonl_file(draw: st.DrawFn) -> tuple[list[Line], bytes, str]:
    lines = [draw(jsonl_line(n)) for n in range(1, draw(st.integers(1, 8)) + 1)]
    seen_dup = False
    for line in lines:  # the first "dup" line is good, the others are duplicates
        if line.expect == "dup":
            first = ("good", "dup", "t", {})
            line.expect, line.key, line.text, line.meta = ("error", None, None, {}) if seen_dup else first
            seen_dup = True
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le"]))
    last = lines[-1]
    if draw(st.booleans()) and last.expect != "blank" and len(last.raw) > 2:
        # truncated last line (no line ending): any strict prefix of these lines is invalid JSON,
        # or valid JSON that is not an object (`12` of `123`)
        last.raw = last.raw[: draw(st.integers(1, len(last.raw) - 2))].rstrip(b"}")
        last.expect = "error"
        data = eol.join(line.raw for line in lines)
    else:
        data = eol.join(line.raw for line in lines) + draw(st.sampled_from([eol, b""]))
    if encoding == "utf-8-sig":
        data = b"\xef\xbb\xbf" + data
    elif encoding.startswith("utf-16"):
        # re-encode the text; Latin-1 or surrogate bytes can't be: those lines become '?'
        data = data.decode("utf-8", "replace").encode(encoding, "replace")
    return lines, data, encoding


def _check_good(record: Record, line: Line, base: Path) -> None:
    assert record.error is None, (record, line)
    assert record.key == line.key
    assert record.text == line.text
    assert record.meta == line.meta
    if line.image is None:
        assert record.image is None
    else:
        assert record.image == str(Path(line.image) if line.image.startswith("/") else base / line.image)


def _check_lines(records: list[Record], lines: list[Line], base: Path, *, exact_lines: bool = True) -> None:
    """Good lines come back as records in order, bad lines as their own error records."""
    expected = [(n, line) for n, line in enumerate(lines, start=1) if line.expect != "blank"]
    assert len(records) == len(expected), ([r.error for r in records], [line.expect for _, line in expected])
    for record, (n, line) in zip(records, expected, strict=True):
        assert record.error is None or record.error.startswith(f"line {n}: " if exact_lines else "line ")
        if line.expect == "good":
            _check_good(record, line, base)
        elif line.expect == "error":
            assert record.error is not None, (record, line)


@given(jsonl_file())
def test_jsonl_lines_give_records_or_their_own_errors(folder: Path, case: tuple[list[Line], bytes, str]) -> None:
    lines, data, encoding = case
    path = folder / "m.jsonl"
    path.write_bytes(data)
    if encoding == "utf-16":
        with pytest.raises(DataError, match="UTF-16"):
            list(read_records(path))
        return
    records = list(read_records(path))
    if encoding == "utf-16-le":  # no byte-order mark: nothing to tell it apart, but every line is an error
        assert all(r.error for r in records)
        return
    _check_lines(records, lines, folder)


# ---- JSON array ------------------------------------------------------------------------------
@given(st.lists(jsonl_line(1), min_size=1, max_size=5), st.sampled_from(["whole", "cut", "deep", "big-int"]))
def test_json_array_gives_records_or_one_data_error(folder: Path, lines: list[Line], damage: str) -> None:
    items = [line.raw for line in lines if line.expect != "blank"]
    data = b"[" + b",\n".join(items) + b"]"
    if damage == "cut":
        data = data[: len(data) // 2]
    elif damage == "deep":
        data = b"[" + _nested(50_000).encode() + b"]"
    elif damage == "big-int":
        data = b"[" + b"9" * 5_000 + b"]"
    path = folder / "m.json"
    path.write_bytes(data)
    try:
        records = list(read_records(path))
    except DataError as e:
        assert str(e).startswith(str(path))
        return
    assert damage == "whole"
    assert len(records) == len(items)


# ---- CSV -------------------------------------------------------------------------------------
CSV_HEADER = ["id", "image", "text", "group", "meta", "extra"]


def _csv_row(cells: list[str], eol: str) -> bytes:
    # Written with "\r\n" whatever the file's line ending: with "\n" the writer leaves a "\r" in a
    # field unquoted, a row no reader can read back (mmgen's own writer uses "\r\n", the default).
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue()[:-2].encode("utf-8")


@st.composite
def csv_row(draw: st.DrawFn, n: int, eol: str) -> Line:
    key = f"k{n}-{draw(KEYS)}"
    kind = draw(
        st.sampled_from(
            ["good", "good", "good", "columns", "meta-type", "meta-json", "deep", "big-int", "nan", "surrogate",
             "latin-1", "huge", "no-content", "blank", "no-home"]
        )
    )  # fmt: skip
    text = draw(TEXTS.filter(lambda t: len(t) < CSV_FIELD_LIMIT))
    meta = draw(METAS)
    image = draw(IMAGES.filter(lambda i: i is None or "\x00" not in i))
    extra = draw(st.sampled_from(["", "red", "1", "x,y"]))
    cells = [key, image or "", text, draw(st.sampled_from(["", "g1", "g2"])), json.dumps(meta) if meta else "", extra]
    good = Line(b"", "good", key, text, {**({"extra": extra} if extra else {}), **meta}, image)

    def row(changed: dict[int, str]) -> bytes:
        return _csv_row([changed.get(i, c) for i, c in enumerate(cells)], eol)

    if kind == "good":
        good.raw = row({})
        return good
    if kind == "columns":
        count = draw(st.integers(1, 9).filter(lambda c: c != len(CSV_HEADER)))
        return Line(_csv_row((cells * 2)[:count], eol) if count > 1 else b"only-one-cell", "error")
    if kind == "meta-type":
        return Line(row({4: draw(st.sampled_from(["[1, 2]", "5", '"s"', "true", "null "]))}), "error")
    if kind == "meta-json":
        return Line(row({4: draw(st.sampled_from(["{", "{'a': 1}", "{}}", "nope"]))}), "error")
    if kind == "deep":
        return Line(row({4: '{"a": ' + _nested(draw(st.integers(2_000, 60_000))) + "}"}), "error")
    if kind == "big-int":
        return Line(row({4: '{"a": ' + "3" * draw(st.integers(4_400, 20_000)) + "}"}), "error")
    if kind == "nan":
        return Line(row({4: '{"a": ' + draw(st.sampled_from(["NaN", "-Infinity", "1e999"])) + "}"}), "error")
    if kind == "surrogate":
        return Line(row({4: '{"a": "\\udc00"}'}), "error")
    if kind == "latin-1":
        word = draw(st.text(st.characters(min_codepoint=0xC0, max_codepoint=0xFF), min_size=1, max_size=5))
        return Line(_csv_row([key, "", word, "", "", ""], eol).decode("utf-8").encode("latin-1", "replace"), "error")
    if kind == "huge":  # over csv.field_size_limit(): quoted, spanning lines, with commas and quotes inside
        body = draw(st.sampled_from(["y" * 150_000, ('a,"b"' + eol) * 30_000, ("z" * 99 + "\n") * 2_000]))
        return Line(row({2: body}), "error")
    if kind == "no-content":
        return Line(row({1: "", 2: ""}), "error")
    if kind == "no-home":
        return Line(row({1: NO_HOME}), "error")
    return Line(draw(st.sampled_from([b"", b",,,,,", b"  "])), "blank")


@st.composite
def csv_file(draw: st.DrawFn) -> tuple[list[Line], bytes, str]:
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    lines = [draw(csv_row(n, eol)) for n in range(2, draw(st.integers(2, 9)) + 1)]
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16"]))
    header = _csv_row(CSV_HEADER, eol)
    body = eol.encode().join(line.raw for line in lines)
    if draw(st.booleans()) and len(lines[-1].raw) > 2 and lines[-1].expect != "blank":
        body = body[: len(body) - draw(st.integers(1, len(lines[-1].raw) - 2))]
        lines[-1].expect = "either"  # a cut row may still be a row (shorter text), or not
    else:
        body += draw(st.sampled_from([eol.encode(), b""]))
    data = header + eol.encode() + body
    if encoding == "utf-8-sig":
        data = b"\xef\xbb\xbf" + data
    elif encoding == "utf-16":
        data = data.decode("utf-8", "replace").encode("utf-16")
    return lines, data, encoding


@given(csv_file())
def test_csv_rows_give_records_or_their_own_errors(folder: Path, case: tuple[list[Line], bytes, str]) -> None:
    lines, data, encoding = case
    path = folder / "m.csv"
    path.write_bytes(data)
    if encoding == "utf-16":
        with pytest.raises(DataError, match="UTF-16"):
            list(read_records(path))
        return
    records = list(read_records(path))
    # a quoted field spanning lines shifts the physical line numbers: match rows by order, not number
    _check_lines(records, lines, folder, exact_lines=False)


# ---- regressions: each bug the fuzz tests found, as a plain test -------------------------------
GOOD = b'{"id": "a", "text": "x"}\n'
AFTER = b'{"id": "c", "text": "z"}\n'


@pytest.mark.parametrize(
    ("middle", "reason"),
    [
        # RecursionError
        (b'{"id": "b", "text": "y", "meta": ' + _nested(100_000).encode() + b"}", "nested too deeply"),
        (b'{"id": "b", "text": "y", "n": ' + b"1" * 5_000 + b"}", "too many digits"),  # ValueError (int limit)
        (b'{"id": "b", "text": "y", "meta": {"n": NaN}}', "NaN or Infinity"),  # the store refused it later
        (b'{"id": "b", "text": "y", "meta": {"n": 1e400}}', "NaN or Infinity"),  # read as inf
        (b'{"id": "b", "text": "\\ud800"}', "unpaired surrogate"),  # UnicodeEncodeError in the store
        (b'{"id": "b", "image": "' + NO_HOME.encode() + b'"}', "cannot expand '~'"),  # RuntimeError
    ],
)
def test_jsonl_regressions(folder: Path, middle: bytes, reason: str) -> None:
    path = folder / "r.jsonl"
    path.write_bytes(GOOD + middle + b"\n" + AFTER)
    records = list(read_records(path))
    assert [r.key for r in records][::2] == ["a", "c"] and [r.error for r in records][::2] == [None, None]
    assert records[1].error is not None and records[1].error.startswith("line 2: ") and reason in records[1].error


@pytest.mark.parametrize(
    ("middle", "reason"),
    [
        ('b,,y,"{""a"": ' + "[" * 20_000 + "]" * 20_000 + '}"', "nested too deeply"),
        ('b,,y,"{""n"": ' + "1" * 5_000 + '}"', "too many digits"),
        ('b,,y,"{""n"": NaN}"', "NaN or Infinity"),
        (f"b,{NO_HOME},y,", "cannot expand '~'"),
    ],
)
def test_csv_regressions(folder: Path, middle: str, reason: str) -> None:
    path = folder / "r.csv"
    path.write_text(f"id,image,text,meta\na,,x,\n{middle}\nc,,z,\n", encoding="utf-8")
    records = list(read_records(path))
    assert [(r.key, r.error) for r in records][::2] == [("a", None), ("c", None)]
    assert records[1].error is not None and reason in records[1].error


def test_csv_field_over_the_limit_inside_quotes_makes_no_phantom_rows(folder: Path) -> None:
    # Before: after the csv.Error the reader resumed inside the quoted field, so its lines read as
    # rows ("yy" with text "zz", thousands of duplicates) and the row after it was swallowed.
    path = folder / "q.csv"
    path.write_text('id,text\na,x\nb,"' + "yy,zz\n" * 30_000 + '"\nc,z\n', encoding="utf-8")
    records = list(read_records(path))
    assert [(r.key, r.error is None) for r in records] == [("a", True), (records[1].key, False), ("c", True)]
    assert "field larger than field limit" in str(records[1].error)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_utf16_and_utf32_manifests_are_one_clear_data_error(folder: Path, encoding: str, suffix: str) -> None:
    text = {".jsonl": '{"id": "a", "text": "x"}\n', ".json": '[{"id": "a", "text": "x"}]', ".csv": "id,text\na,x\n"}
    path = folder / f"u{suffix}"
    data = text[suffix].encode(encoding)
    path.write_bytes(data if encoding != "utf-16-be" else b"\xfe\xff" + data)
    with pytest.raises(DataError, match=r"is UTF-(16|32) text; save it as UTF-8"):
        list(read_records(path))
