"""Fuzz the `--where` grammar: random strings parse or fail with ConfigError; SQL and memory agree.

The agreement test inserts a few items with random meta (numbers of every size, booleans, null,
strings, lists, nested values) into a real SQLite store, runs random filters through
`filter_items_by_meta` and through `Filters.matches`, and compares the keys each selects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from sqlalchemy import select

from mmgen.errors import ConfigError
from mmgen.store import Store, open_store
from mmgen.store.filters import COLUMN_KEYS, OPERATORS, Filters, as_filters, filter_items_by_meta, parse_where
from mmgen.store.models import Item
from mmgen.store.repo import get_or_create_corpus

META_KEYS = ["a", "b", "size", "a.b", "meta", "group", "x-y"]
FILTER_KEYS = [*META_KEYS, "meta.a", "meta.a.b", "meta.group", "meta.", "corpus", "group", "modality"]
CORPORA = ["north", "south"]
GROUPS = [None, "g1", "g2", "G1"]
MODALITIES = ["image", "text", "image+text"]
# Few distinct strings, so that equality filters hit; NUL is left out (see the xfail below).
WORDS = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=3) | st.sampled_from(
    ["red", "Red", "1", "1.0", "true", "null", "é", "😀", "a b", "x'); DROP TABLE items; --"]
)
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -0.0, 1e20, 1 / 3, 5e-324, 2**63, 2**64 + 1, 10**400, -(10**400), 1e308, 12345678901234567890]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, WORDS)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS | st.lists(SCALARS, max_size=2) | st.dictionaries(WORDS, SCALARS, max_size=1), max_size=4),
    st.dictionaries(WORDS, SCALARS, max_size=2),
)
METAS = st.dictionaries(st.sampled_from(META_KEYS), VALUES, max_size=4)


def _text_of(value: Any) -> str:
    """A value as a filter would spell it to match it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return str(value)


def _stored_pairs(metas: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Every (key, scalar) stored, list elements included: what filters should often aim at."""
    found: list[tuple[str, Any]] = []
    for meta in metas:
        for key, value in meta.items():
            for v in value if isinstance(value, list) else [value]:
                if v is not None and not isinstance(v, (list, dict)):
                    found.append((key, v))
    return found


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@st.composite
def where_pair(draw: st.DrawFn, aim: tuple[tuple[str, Any], ...] = ()) -> str:
    """One `KEY OP VALUE`, mostly well formed; half the time aimed at a (key, value) stored."""
    if aim and draw(st.booleans()):
        key, stored = draw(st.sampled_from(aim))
        key = draw(st.sampled_from([key, f"meta.{key}"]))
        op = draw(st.sampled_from(OPERATORS if _is_number(stored) and abs(stored) <= 1e308 else ("=", "!=")))
        return f"{key}{op}{_text_of(stored)}"
    key = draw(st.sampled_from(FILTER_KEYS))
    op = draw(st.sampled_from(("=", "=", "!=") if key in COLUMN_KEYS else OPERATORS))
    if op in ("=", "!="):
        value = draw(st.one_of(SCALARS.map(_text_of), st.sampled_from(CORPORA + MODALITIES + ["g1", "G1"])))
    else:
        value = draw(st.one_of(
            NUMBERS.filter(lambda n: abs(n) <= 1e308).map(_text_of),
            st.sampled_from(["0", "-1", "1e3", " 2 ", "1_000", "abc", "nan", "inf", ""]),
        ))  # fmt: skip
    return f"{draw(st.sampled_from(['', ' ']))}{key}{draw(st.sampled_from(['', ' ']))}{op}{value}"


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path = Path(tmp_path_factory.mktemp("where")) / "store.db"
    store = open_store(f"sqlite:///{path}")
    with store.session() as s:
        for name in CORPORA:
            get_or_create_corpus(s, name, f"{name}.jsonl")
        s.commit()
    try:
        yield store
    finally:
        store.close()


# ---- parsing ---------------------------------------------------------------------------------
RAW_PAIRS = st.one_of(
    st.text(max_size=30),
    st.text(st.sampled_from("ab.-_ =!<>0123456789eE+nai\x00'\""), max_size=12),
    where_pair(),
)


@given(st.lists(RAW_PAIRS, max_size=4))
def test_random_strings_parse_or_fail_with_config_error(pairs: list[str]) -> None:
    try:
        filters = parse_where(pairs, flag="--where")
    except ConfigError as e:
        assert str(e)
        return
    assert len(filters.conditions) == len(pairs)
    assert as_filters(filters) is filters
    again = Filters.from_mapping(json.loads(json.dumps(filters.to_json())))
    assert again.to_json() == filters.to_json()


MAPPING_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=5)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from([*OPERATORS, "~", ""]), inner),
    max_leaves=6,
)


@given(st.dictionaries(st.one_of(st.sampled_from(FILTER_KEYS), st.text(max_size=6), st.integers()), MAPPING_VALUES,
                       max_size=3))  # fmt: skip
def test_random_mappings_give_filters_or_config_error(where: dict[Any, Any]) -> None:
    try:
        filters = as_filters(where)
    except ConfigError:
        return
    assert Filters.from_mapping(json.loads(json.dumps(filters.to_json()))).to_json() == filters.to_json()


@given(st.lists(where_pair(), max_size=4), METAS)
def test_matcher_never_raises_on_random_meta(pairs: list[str], meta: dict[str, Any]) -> None:
    try:
        filters = parse_where(pairs)
    except ConfigError:
        return
    assert filters.matches(meta) in (True, False)


# ---- SQL and memory agree ----------------------------------------------------------------------
ITEMS = st.lists(
    st.tuples(st.sampled_from(CORPORA), st.sampled_from(GROUPS), st.sampled_from(MODALITIES), METAS),
    min_size=2,
    max_size=6,
)


@given(ITEMS, st.data())
def test_sql_and_in_memory_matcher_agree(fuzz_store: Store, items: list[tuple[Any, ...]], data: st.DataObject) -> None:
    aim = tuple(_stored_pairs([meta for *_, meta in items]))
    pairs = data.draw(st.lists(where_pair(aim), min_size=1, max_size=3), label="pairs")
    try:
        filters = parse_where(pairs)
    except ConfigError:
        event("filters refused")
        return
    # A plain meta dict has no columns: the meta conditions alone, on the dicts as written.
    on_meta = Filters(tuple(c for c in filters.conditions if c.key not in COLUMN_KEYS))
    with fuzz_store.session() as s:
        corpora = {name: get_or_create_corpus(s, name, f"{name}.jsonl") for name in CORPORA}
        for i, (corpus, group, modality, meta) in enumerate(items):
            s.add(
                Item(corpus=corpora[corpus], key=f"i{i}", modality=modality, sha256="0" * 64, group_key=group, meta=meta)
            )
        s.flush()
        try:
            in_sql = list(s.scalars(filter_items_by_meta(select(Item.key), filters).order_by(Item.key)))
            in_memory = [item.key for item in s.scalars(select(Item).order_by(Item.key)) if filters.matches(item)]
            meta_in_sql = list(s.scalars(filter_items_by_meta(select(Item.key), on_meta).order_by(Item.key)))
        finally:
            s.rollback()
    event("none selected" if not in_sql else "all selected" if len(in_sql) == len(items) else "some selected")
    assert in_sql == in_memory
    assert meta_in_sql == [f"i{i}" for i, (*_, meta) in enumerate(items) if on_meta.matches(meta)]


# ---- regressions -------------------------------------------------------------------------------
REGRESSION_METAS = {
    "exp": {"v": 1e20},  # SQLite rendered its atom as 1.0e+20
    "third": {"v": 1 / 3},  # ... to 15 digits
    "int70": {"v": 2**70},  # ... an integer beyond 64 bits as a float
    "twenty": {"v": 12345678901234567890},
    "negzero": {"v": -0.0},
    "tiny": {"v": 5e-324},
    "huge": {"v": 10**400},  # in memory: float() raised OverflowError
    "neghuge": {"v": -(10**400)},
}


@pytest.mark.parametrize(
    "pairs",
    [[f"v={json.dumps(m['v'])}"] for m in REGRESSION_METAS.values()] + [["v>0"], ["v<0"], ["v>=1e300"], ["v!=1e+20"]],
    ids=lambda p: " ".join(p)[:40],
)
def test_number_regressions(fuzz_store: Store, pairs: list[str]) -> None:
    filters = parse_where(pairs)
    with fuzz_store.session() as s:
        corpus = get_or_create_corpus(s, "north", "north.jsonl")
        for key, meta in REGRESSION_METAS.items():
            s.add(Item(corpus=corpus, key=key, modality="text", sha256="0" * 64, meta=meta))
        s.flush()
        try:
            in_sql = list(s.scalars(filter_items_by_meta(select(Item.key), filters).order_by(Item.key)))
            in_memory = [item.key for item in s.scalars(select(Item).order_by(Item.key)) if filters.matches(item)]
        finally:
            s.rollback()
    assert in_sql == in_memory
    if "=" in pairs[0] and not pairs[0].startswith("v!="):
        assert len(in_sql) == 1


def test_range_bound_beyond_float_range_is_config_error() -> None:
    with pytest.raises(ConfigError, match="not a number"):  # was OverflowError from float()
        Filters.from_mapping({"size": {">=": 10**400}})


@pytest.mark.xfail(reason="SQLite (3.40) cuts JSON strings at an escaped NUL (\\u0000): SQL misses what memory matches")
def test_nul_in_a_meta_string(fuzz_store: Store) -> None:
    filters = parse_where(["v=x\x00y"])
    with fuzz_store.session() as s:
        corpus = get_or_create_corpus(s, "north", "north.jsonl")
        s.add(Item(corpus=corpus, key="nul", modality="text", sha256="0" * 64, meta={"v": "x\x00y"}))
        s.flush()
        try:
            in_sql = list(s.scalars(filter_items_by_meta(select(Item.key), filters)))
        finally:
            s.rollback()
    assert in_sql == ["nul"] and filters.matches({"v": "x\x00y"})
