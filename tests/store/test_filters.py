"""The one `--where` grammar: parsing, errors, the recorded form, SQL on each backend, and the in-memory matcher."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from mmgen.errors import ConfigError
from mmgen.store import Store
from mmgen.store.filters import Condition, Filters, as_filters, filter_items_by_meta, parse_where
from mmgen.store.models import Item
from mmgen.store.repo import get_or_create_corpus

METAS: dict[str, dict[str, Any]] = {
    "bus": {"style": "openmoji-color", "tags": ["school", "vehicle"], "animated": False, "size": 72},
    "car": {"style": "openmoji-black", "tags": ["vehicle"], "animated": True, "size": 72.5},
    "cat": {"style": "twemoji", "tags": "animal", "size": "16", "license": {"name": "cc"}},  # "16": a string
    "dog": {"style": None, "size": 16},
    "elk": {"style": "Twemoji", "size": -3, "tags": [["nested"], 5, True, None]},
    "fox": {"size": 1e3, "ratio": 0.5},
}
ALL = sorted(METAS)

CASES: list[tuple[list[str], list[str]]] = [
    ([], ALL),
    (["style=twemoji"], ["cat"]),
    # a repeated key is OR of its values
    (["style=twemoji", "style=openmoji-color"], ["bus", "cat"]),
    (["tags=vehicle", "tags=animal"], ["bus", "car", "cat"]),
    (["group=CAR", "group=CAT"], ["car", "cat"]),
    (["corpus=animals", "corpus=vehicles"], ALL),
    # different keys are AND
    (["tags=vehicle", "animated=false"], ["bus"]),
    (["style=openmoji-color", "corpus=animals"], []),
    (["corpus=animals", "corpus=vehicles", "modality=text"], ["dog"]),
    (["style=twemoji", "style=openmoji-color", "size<100"], ["bus"]),
    # case-sensitive, exact
    (["style=Twemoji"], ["elk"]),
    (["style=openmoji"], []),
    (["meta.style=twemoji"], ["cat"]),
    # numbers and booleans as text, lists one level deep, objects and null never
    (["size=72"], ["bus"]),
    (["size=72.5"], ["car"]),
    (["size=16"], ["cat", "dog"]),
    (["size=1000.0"], ["fox"]),
    (["tags=5"], ["elk"]),
    (["tags=true"], ["elk"]),
    (["tags=nested"], []),
    (['tags=["nested"]'], []),
    (["license=cc"], []),
    (["style=None"], []),
    (["group=FOX"], []),  # fox has no group
    # ranges: JSON numbers only (cat's "16" is a string)
    (["size>=16"], ["bus", "car", "dog", "fox"]),
    (["size>16"], ["bus", "car", "fox"]),
    (["size<16"], ["elk"]),
    (["size<=16"], ["dog", "elk"]),
    (["size>=16", "size<100"], ["bus", "car", "dog"]),  # bounds on one key all hold
    (["size>=72", "size<=72.5", "style=openmoji-black"], ["car"]),
    (["size>-5", "size<1e4"], ["bus", "car", "dog", "elk", "fox"]),
    (["ratio<1"], ["fox"]),
    (["animated>=0"], []),  # booleans are not numbers
    (["style>=0"], []),
    # != : everything = does not match, missing keys and NULL columns included
    (["style!=twemoji"], ["bus", "car", "dog", "elk", "fox"]),
    (["tags!=vehicle"], ["cat", "dog", "elk", "fox"]),
    (["animated!=true"], ["bus", "cat", "dog", "elk", "fox"]),
    (["group!=BUS"], ["car", "cat", "dog", "elk", "fox"]),
    (["corpus!=animals", "style!=openmoji-black"], ["bus"]),
    # hostile values stay data
    (["group=x' OR 1=1 --"], []),
    (["style=twemoji' OR '1'='1"], []),
    (["tags=\"] OR 1=1 --"], []),
    (["corpus=animals' OR 1=1 --"], []),
    (["style!=x'); DROP TABLE items; --"], ALL),
]


@pytest.fixture(scope="module")
def populated(module_store: Store) -> Store:
    with module_store.session() as s:
        vehicles = get_or_create_corpus(s, "vehicles", "manifest.jsonl")
        animals = get_or_create_corpus(s, "animals", "folder:animals")
        for key, meta in METAS.items():
            s.add(
                Item(
                    corpus=vehicles if key in ("bus", "car") else animals,
                    key=key,
                    modality="text" if key == "dog" else "image+text",
                    sha256="0" * 64,
                    group_key=None if key == "fox" else key.upper(),
                    meta=meta,
                )
            )
        s.commit()
    return module_store


@pytest.mark.parametrize(("pairs", "expected"), CASES, ids=[" ".join(p) or "none" for p, _ in CASES])
def test_sql_filter_and_in_memory_matcher_agree(populated: Store, pairs: list[str], expected: list[str]) -> None:
    filters = parse_where(pairs)
    with populated.session() as s:
        found = s.scalars(filter_items_by_meta(select(Item.key), filters).order_by(Item.key)).all()
        items = s.scalars(select(Item).order_by(Item.key)).all()
        in_memory = [item.key for item in items if filters.matches(item)]
    assert found == expected
    assert in_memory == expected
    # the same filters from their recorded form select the same items
    again = Filters.from_mapping(json.loads(json.dumps(filters.to_json())))
    assert again.to_json() == filters.to_json()
    assert [item.key for item in items if again.matches(item)] == expected


def test_plain_dicts_still_work_and_mean_equality(populated: Store) -> None:
    with populated.session() as s:
        def keys(where: Any) -> list[str]:
            return list(s.scalars(filter_items_by_meta(select(Item.key), where).order_by(Item.key)))

        assert keys({"style": "twemoji"}) == ["cat"]
        assert keys({"style": ["twemoji", "Twemoji"], "size": -3}) == ["elk"]
        assert keys({"animated": True}) == ["car"]
        assert keys({"size": {">=": 16, "<": [100]}}) == ["bus", "car", "dog"]
        assert keys(None) == keys({}) == ALL


def test_matcher_on_meta_dicts_and_records() -> None:
    from mmgen.data.records import Record

    assert parse_where(["style=twemoji", "style=openmoji"]).matches({"style": "openmoji"})
    assert not parse_where(["style=twemoji"]).matches({"style": "Twemoji"})
    assert parse_where(["size>=16", "size<64"]).matches({"size": 16}) and not parse_where(["size<64"]).matches({})
    assert not parse_where(["group=g"]).matches({"group": "g"})  # a dict has no columns; meta.group reads it
    assert parse_where(["meta.group=g"]).matches({"group": "g"})
    rec = Record(key="k", group="red-circle", meta={"style": "filled", "base": True})
    assert parse_where(["group=red-circle", "base=true"]).matches(rec)
    assert not parse_where(["group=red-circle", "base=false"]).matches(rec)
    assert parse_where(["base=true"]).matches(Record(key="k", meta=[1])) is False  # type: ignore[arg-type]


def test_parse_and_recorded_form() -> None:
    assert parse_where([]) == Filters() and not parse_where([]) and parse_where([]).to_json() == {}
    assert parse_where(["style=twemoji"]).to_json() == {"style": "twemoji"}
    assert parse_where(["style=twemoji"]).to_json(lists=True) == {"style": ["twemoji"]}
    assert parse_where(["style=a", "style=b", "base=true"]).to_json() == {"style": ["a", "b"], "base": "true"}
    assert parse_where(["size<64", "size>=16", "size!=20", "style=x"]).to_json() == {
        "size": {"!=": ["20"], ">=": [16.0], "<": [64.0]},
        "style": "x",
    }
    # the split is at the first operator; the value is taken as written, the key stripped
    assert parse_where([" group =x' OR 1=1 --"]).conditions == (Condition("group", "=", "x' OR 1=1 --"),)
    assert parse_where(["style= a b"]).conditions == (Condition("style", "=", " a b"),)
    assert parse_where(["formula=a<=b"]).conditions == (Condition("formula", "=", "a<=b"),)
    assert parse_where(["size >= 1e3"]).conditions == (Condition("size", ">=", 1000.0),)
    assert parse_where(["style="]).conditions == (Condition("style", "=", ""),)
    filters = parse_where(["style=a"])
    assert as_filters(filters) is filters and as_filters({"style": "a"}) == filters


@pytest.mark.parametrize("pair", ["foo", "", "=x", "  =x", ">=3", "!x"])
def test_bad_syntax_lists_the_accepted_forms(pair: str) -> None:
    with pytest.raises(ConfigError, match=r"--where takes KEY=VALUE, KEY!=VALUE, KEY>=N, KEY<=N, KEY>N or KEY<N"):
        parse_where([pair])


def test_other_errors_name_the_flag_or_the_key() -> None:
    for pair in ("size>=big", "size<", "size>nan", "size<=inf"):
        with pytest.raises(ConfigError, match=r"--where .*compares numbers.*not a number"):
            parse_where([pair])
    with pytest.raises(ConfigError, match="--filter takes"):
        parse_where(["x"], flag="--filter")
    for pair in ("a b=c", "tags[0]=x", "$.style=x", "é=x"):
        with pytest.raises(ConfigError, match="invalid filter key"):
            parse_where([pair])
    with pytest.raises(ConfigError, match="group is a text column"):
        parse_where(["group>=3"])
    with pytest.raises(ConfigError, match="cannot be None"):
        Filters.from_mapping({"style": None})
    with pytest.raises(ConfigError, match="not a number"):
        Filters.from_mapping({"size": {">=": "big"}})


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "postgresql"])
def test_values_and_keys_are_bound_never_interpolated(dialect: Any) -> None:
    filters = parse_where(["stylez=x' OR 1=1 --", "sizez>=1617", "stylez!=qq' --", "corpus=cc' --"])
    sql = str(filter_items_by_meta(select(Item.key), filters).compile(dialect=dialect))
    for text in ("OR 1=1", "qq", "cc'", "1617", "stylez", "sizez"):
        assert text not in sql, sql
