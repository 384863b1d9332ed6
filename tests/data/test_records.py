"""Manifest reading and writing: JSONL, JSON arrays and CSV, paths, malformed lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmgen.data import Record, read_records, record_to_json, write_records
from mmgen.errors import DataError

RECORDS = [
    Record(
        key="om:1F68C",
        image="/abs/1F68C.png",
        text="bus",
        group="1F68C",
        meta={"style": "openmoji-color", "tags": ["school", "vehicle"]},
    ),
    Record(key="t1", text="a caption only, with a comma"),
    Record(key="i1", image="/abs/x.png", group="g"),
]


@pytest.mark.parametrize("name", ["m.jsonl", "m.csv"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_records([*RECORDS, Record(key="bad", error="boom")], path) == 3
    assert list(read_records(path)) == RECORDS


def test_record_to_json_leaves_out_empty_fields() -> None:
    assert record_to_json(Record(key="k", text="t")) == {"id": "k", "text": "t"}


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    lines = [
        {"id": "a", "image": "img/a.png"},
        {"id": "b", "image": "../b.png", "text": "b"},
        {"id": "c", "image": "/abs/c.png"},
    ]
    (sub / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    images = [r.image for r in read_records(sub / "m.jsonl")]
    assert images == [str(sub / "img/a.png"), str(sub / "../b.png"), "/abs/c.png"]


def test_csv_extra_columns_and_meta_json(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        'key,image,text,group,meta,source\nk1,a.png,"hello, world",g,"{""x"": 1}",web\n,,only text,,,\n',
        encoding="utf-8",
    )
    first, second = read_records(path)
    assert first == Record(
        key="k1", image=str(tmp_path / "a.png"), text="hello, world", group="g", meta={"x": 1, "source": "web"}
    )
    assert second.key == "line-3" and second.text == "only text" and second.image is None


def test_malformed_lines_become_error_records(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        b'{"id": "ok", "text": "fine"}\n'
        b'{"id": "broken", "text": \n'
        b"[1, 2]\n"
        b"\n"
        b'{"id": "nothing"}\n'
        b'{"id": "ok", "text": "again"}\n'
        b'{"text": "\xff\xfe"}\n'
        b'{"image": 3}\n'
        b'{"text": "no id"}\n'
    )
    got = list(read_records(path))
    assert [r.key for r in got] == ["ok", "line-2", "line-3", "nothing", "line-6", "line-7", "line-8", "line-9"]
    assert got[0].error is None and got[-1].error is None and got[-1].text == "no id"
    errors = [r.error for r in got[1:-1]]
    assert errors[0] is not None and errors[0].startswith("line 2: invalid JSON")
    assert errors[1] == "line 3: expected a JSON object, got list"
    assert errors[2] == "line 5: record has neither 'image' nor 'text'"
    assert errors[3] == "line 6: duplicate id 'ok' (first on line 1)"
    assert errors[4] == "line 7: not valid UTF-8"
    assert errors[5] == "line 8: 'image' must be a string, got int"


def test_malformed_csv_rows(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"id,image,text\na,a.png,ok\nb,b.png\nc,,\xff\n")
    good, short, bad_utf8 = read_records(path)
    assert good.error is None
    assert short.error == "line 3: expected 3 columns, got 2"
    assert bad_utf8.error == "line 4: not valid UTF-8"


def test_json_array_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"id": "a", "text": "x"}, "oops"]), encoding="utf-8")
    a, oops = read_records(path)
    assert a == Record(key="a", text="x") and oops.error == "line 2: expected a JSON object, got str"


def test_missing_or_unsupported_manifest(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest not found"):
        list(read_records(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="unsupported manifest format"):
        list(read_records(tmp_path / "m.txt"))
