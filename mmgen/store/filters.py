"""`--where KEY=VALUE` filters on items: columns or keys of the `meta` JSON, always as bound parameters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import Boolean, ColumnElement, Select, String, Text, bindparam, cast, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement

from mmgen.errors import ConfigError
from mmgen.store.models import Corpus, Item

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
# Keys that name item columns instead of meta keys; `meta.KEY` always names a meta key.
COLUMN_KEYS = ("corpus", "group", "modality")
META_PREFIX = "meta."

Stmt = TypeVar("Stmt", bound=Select[Any])


def filter_items_by_meta(stmt: Stmt, where: Mapping[str, Any]) -> Stmt:
    """Add one condition per `where` entry to a select over `Item`; every entry must hold.

    `corpus`, `group` and `modality` compare with those columns; any other key (or `meta.KEY`)
    with the item's `meta[KEY]`, as text: JSON booleans read `true`/`false`, numbers as written,
    and a list matches when one of its elements does (`tags=vehicle`). Keys are limited to
    `[A-Za-z0-9_.-]` (ConfigError otherwise); keys and values only ever reach SQL as parameters.
    """
    conditions = [item_condition(key, value) for key, value in where.items()]
    return stmt.where(*conditions) if conditions else stmt


def item_condition(key: str, value: Any) -> ColumnElement[bool]:
    """The condition of one `KEY=VALUE` filter on `Item` (see `filter_items_by_meta`)."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ConfigError(
            f"invalid filter key {key!r}: use letters, digits, '_', '.' or '-', "
            f"one of the columns {', '.join(COLUMN_KEYS)}, or a meta key (meta.KEY)"
        )
    text = _as_text(value)
    if key == "corpus":
        return Item.corpus_id.in_(select(Corpus.id).where(Corpus.name == text))
    if key == "group":
        return Item.group_key == text
    if key == "modality":
        return Item.modality == text
    if key.startswith(META_PREFIX) and len(key) > len(META_PREFIX):
        key = key[len(META_PREFIX) :]
    return MetaEquals(Item.meta, key, text)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        raise ConfigError("a filter value cannot be None")
    return str(value)


class MetaEquals(FunctionElement[bool]):
    """`meta[key]` (or one element of it, when it is a list) equals `value` as text.

    Rendered per dialect below; the key and value are Python strings turned into bound
    parameters at compile time. Caching is off because those parameters are built there.
    """

    type = Boolean()
    name = "mmgen_meta_equals"
    inherit_cache = False

    def __init__(self, column: ColumnElement[Any], key: str, value: str) -> None:
        super().__init__(column)
        self.column = column
        self.key = key
        self.value = value


def _bind(compiler: SQLCompiler, value: str, **kw: Any) -> str:
    return compiler.process(cast(bindparam(None, value, type_=String()), Text()), **kw)


@compiles(MetaEquals)
def _meta_equals_default(element: MetaEquals, compiler: SQLCompiler, **kw: Any) -> str:
    # Scalars only: no portable way to look into lists on other backends.
    return compiler.process(element.column[element.key].as_string() == element.value, **kw)


@compiles(MetaEquals, "sqlite")
def _meta_equals_sqlite(element: MetaEquals, compiler: SQLCompiler, **kw: Any) -> str:
    # json_each yields the value itself for a scalar (key NULL), the elements for a list,
    # and the members of an object (excluded: only lists are looked into).
    column = compiler.process(element.column, **kw)
    path = _bind(compiler, f'$."{element.key}"', **kw)
    value = _bind(compiler, element.value, **kw)
    return (
        f"EXISTS (SELECT 1 FROM json_each({column}, {path}) AS mmgen_j "
        f"WHERE (mmgen_j.key IS NULL OR json_type({column}, {path}) = 'array') "
        "AND CASE mmgen_j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"ELSE CAST(mmgen_j.atom AS TEXT) END = {value})"
    )


@compiles(MetaEquals, "postgresql")
def _meta_equals_postgresql(element: MetaEquals, compiler: SQLCompiler, **kw: Any) -> str:
    # A scalar is wrapped in a one-element array so both cases read the same; JSON null gives NULL.
    column = compiler.process(element.column, **kw)
    key = _bind(compiler, element.key, **kw)
    value = _bind(compiler, element.value, **kw)
    node = f"(CAST({column} AS JSON) -> {key})"
    return (
        "EXISTS (SELECT 1 FROM json_array_elements_text("
        f"CASE WHEN json_typeof({node}) = 'array' THEN {node} ELSE json_build_array({node}) END"
        f") AS mmgen_j(v) WHERE mmgen_j.v = {value})"
    )
