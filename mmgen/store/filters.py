"""The one `--where` grammar of every command: filters on items, in SQL and in memory.

A filter is `KEY OP VALUE`, split at the first of `=`, `!=`, `>=`, `<=`, `>`, `<`:

- `KEY=VALUE`: equality. `corpus`, `group` and `modality` name those item columns (`group` is
  the item's or record's group); any other key, or `meta.KEY`, names `meta[KEY]`. Meta values
  compare as text: JSON booleans read `true`/`false`, numbers as written (`size=72`), a list
  matches when one of its elements does (`tags=vehicle`, one level deep); JSON null, objects
  and missing keys match nothing.
- `KEY!=VALUE`: the items that `KEY=VALUE` does not match (missing keys included).
- `KEY>=N`, `KEY<=N`, `KEY>N`, `KEY<N`: numeric ranges on meta values that are JSON numbers
  (strings, booleans, lists, null and missing keys never match); N must be a number
  (ConfigError naming the flag otherwise). The columns are text, so they take no range.
- Repeating a key with `=` means any of its values (`--where style=twemoji --where
  style=openmoji-color` keeps both styles); `!=` and range bounds on a key must all hold
  (`--where size>=16 --where size<64` is an interval). Different keys must all hold.
- Comparisons are exact and case-sensitive, on values exactly as stored, in SQL and in memory:
  `style=Twemoji` does not match `twemoji`. The key is stripped of surrounding spaces, the value
  is taken as written (it may contain `=`, spaces or quotes).
- Keys are limited to `[A-Za-z0-9_.-]`; `--where foo`, an empty key or another key gives a
  ConfigError listing the accepted forms. Keys and values only ever reach SQL as bound
  parameters, never interpolated.

`parse_where` builds `Filters`; `filter_items_by_meta` applies them to a select over `Item`
(SQLite and PostgreSQL), `Filters.matches` to one record or meta dict in memory, with the same
results. `Filters.to_json()` is the recorded form: `{}` without filters, `{"key": "value"}` for
one equality, `{"key": ["a", "b"]}` for several, `{"key": {"OP": [values]}}` once a key has a
`!=` or a range.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    Select,
    String,
    Text,
    and_,
    bindparam,
    cast,
    not_,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement

from mmgen.errors import ConfigError
from mmgen.store.models import Corpus, Item

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
# Keys that name item columns instead of meta keys; `meta.KEY` always names a meta key.
COLUMN_KEYS = ("corpus", "group", "modality", "synthetic")
META_PREFIX = "meta."
# Longest first: the split is at the first operator, and `>=` must not read as `>`.
OPERATORS = ("!=", ">=", "<=", "=", ">", "<")
RANGE_OPERATORS = (">=", "<=", ">", "<")
_OP_ORDER = ("=", "!=", ">", ">=", "<", "<=")
_SPLIT = re.compile(r"!=|>=|<=|=|>|<")
FORMS = "KEY=VALUE, KEY!=VALUE, KEY>=N, KEY<=N, KEY>N or KEY<N"

Stmt = TypeVar("Stmt", bound=Select[Any])


@dataclass(frozen=True)
class Condition:
    """One `KEY OP VALUE`: text for `=` and `!=`, a finite float for the range operators."""

    key: str
    op: str
    value: str | float


@dataclass(frozen=True)
class Filters:
    """Parsed `--where` filters (see the module docstring for the grammar); empty: no filter."""

    conditions: tuple[Condition, ...] = ()

    def __post_init__(self) -> None:
        for c in self.conditions:
            _check_key(c.key)
            if c.op not in OPERATORS:
                raise ConfigError(f"unknown filter operator {c.op!r}: use {FORMS}")
            if c.op in RANGE_OPERATORS and _column(c.key) is not None:
                raise ConfigError(f"{c.key} is a text column: it takes = or !=, not {c.op}")

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def by_key(self) -> dict[str, list[Condition]]:
        """The conditions grouped by key, keys in first-seen order."""
        out: dict[str, list[Condition]] = {}
        for c in self.conditions:
            out.setdefault(c.key, []).append(c)
        return out

    @classmethod
    def from_mapping(cls, where: Mapping[str, Any] | None) -> Filters:
        """From `{key: value}` (equality), `{key: [values]}` (any of) or `to_json()`'s `{key: {OP: [values]}}`.

        Non-string scalars compare as their text (`True` is `true`); None is refused.
        """
        conditions: list[Condition] = []
        for key, value in (where or {}).items():
            ops = value if isinstance(value, Mapping) else {"=": value}
            for op, values in ops.items():
                for v in values if isinstance(values, (list, tuple, set, frozenset)) else [values]:
                    value = _range_value(key, op, v) if op in RANGE_OPERATORS else _text(v)
                    conditions.append(Condition(key, op, value))
        return cls(tuple(conditions))

    def to_json(self, lists: bool = False) -> dict[str, Any]:
        """The stable recorded form (module docstring); `lists`: equality values always as a list."""
        out: dict[str, Any] = {}
        for key, conds in self.by_key().items():
            if all(c.op == "=" for c in conds):
                values = [c.value for c in conds]
                out[key] = values if lists or len(values) > 1 else values[0]
            else:
                ops = {op: [c.value for c in conds if c.op == op] for op in _OP_ORDER}
                out[key] = {op: values for op, values in ops.items() if values}
        return out

    def matches(self, target: Any) -> bool:
        """Whether one record passes, in memory: a meta dict, or an object with `meta` (and columns).

        Columns are read from attributes: `corpus` (a name, or an object with `.name`), `group_key`
        or `group`, and `modality`; a plain dict has no columns, so they match like missing keys.
        """
        if isinstance(target, Mapping):
            meta: Mapping[str, Any] = target
            columns: dict[str, Any] = {}
        else:
            found = getattr(target, "meta", None)
            meta = found if isinstance(found, Mapping) else {}
            corpus = getattr(target, "corpus", None)
            group = getattr(target, "group_key") if hasattr(target, "group_key") else getattr(target, "group", None)
            columns = {
                "corpus": getattr(corpus, "name", corpus),
                "group": group,
                "modality": getattr(target, "modality", None),
                "synthetic": _text(bool(target.synthetic)) if hasattr(target, "synthetic") else None,
            }
        return all(_key_matches(key, conds, meta, columns) for key, conds in self.by_key().items())

    def condition(self) -> ColumnElement[bool] | None:
        """The SQL condition on `Item` of all the filters (None when empty)."""
        clauses = [_key_clause(key, conds) for key, conds in self.by_key().items()]
        return and_(*clauses) if clauses else None


def parse_where(pairs: Sequence[str], flag: str = "--where") -> Filters:
    """`KEY=VALUE`-style strings (module docstring) to Filters; ConfigError naming `flag` on bad syntax."""
    conditions: list[Condition] = []
    for pair in pairs:
        found = _SPLIT.search(pair)
        key = pair[: found.start()].strip() if found else ""
        if found is None or not key:
            raise ConfigError(f"{flag} takes {FORMS} (e.g. key=value, size>=64), not {pair!r}")
        op, value = found.group(), pair[found.end() :]
        _check_key(key)
        if op in RANGE_OPERATORS:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise ConfigError(f"{flag} {pair!r}: {key}{op}N compares numbers, and {value!r} is not a number")
            conditions.append(Condition(key, op, number))
        else:
            conditions.append(Condition(key, op, value))
    return Filters(tuple(conditions))


def as_filters(where: Filters | Mapping[str, Any] | None) -> Filters:
    """Filters as given, or from a plain mapping (see `Filters.from_mapping`); None: no filter."""
    return where if isinstance(where, Filters) else Filters.from_mapping(where)


def filter_items_by_meta(stmt: Stmt, where: Filters | Mapping[str, Any] | None) -> Stmt:
    """Add the filters (Filters, or a mapping as `Filters.from_mapping` reads it) to a select over `Item`."""
    condition = as_filters(where).condition()
    return stmt.where(condition) if condition is not None else stmt


def item_condition(key: str, value: Any) -> ColumnElement[bool]:
    """The condition of one `KEY=VALUE` filter on `Item` (see the module docstring)."""
    _check_key(key)
    text = _text(value)
    column = _column(key)
    if column == "corpus":
        return Item.corpus_id.in_(select(Corpus.id).where(Corpus.name == text))
    if column == "group":
        return Item.group_key == text
    if column == "modality":
        return Item.modality == text
    if column == "synthetic":  # generated items (`mmgen index outputs`): true / false
        return Item.synthetic.is_(text == "true") if text in ("true", "false") else Item.id.is_(None)
    return MetaEquals(Item.meta, _meta_key(key), text)


# ---- helpers -------------------------------------------------------------------------------
def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ConfigError(
            f"invalid filter key {key!r}: use letters, digits, '_', '.' or '-', "
            f"one of the columns {', '.join(COLUMN_KEYS)}, or a meta key (meta.KEY); forms: {FORMS}"
        )


def _column(key: str) -> str | None:
    return key if key in COLUMN_KEYS else None


def _meta_key(key: str) -> str:
    return key[len(META_PREFIX) :] if key.startswith(META_PREFIX) and len(key) > len(META_PREFIX) else key


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        raise ConfigError("a filter value cannot be None")
    return str(value)


def _range_value(key: str, op: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ConfigError(f"filter {key}{op}N compares numbers, and {value!r} is not a number")
    return number


def _key_clause(key: str, conds: Sequence[Condition]) -> ColumnElement[bool]:
    """SQL of one key: any of its `=` values, and every `!=` and range bound."""
    parts: list[ColumnElement[bool]] = []
    equal = [item_condition(key, c.value) for c in conds if c.op == "="]
    if equal:
        parts.append(equal[0] if len(equal) == 1 else or_(*equal))
    for c in conds:
        if c.op == "!=":
            same = item_condition(key, c.value)
            # NULL group_key: `=` is NULL, so `!=` must say true explicitly
            parts.append(or_(Item.group_key.is_(None), not_(same)) if key == "group" else not_(same))
        elif c.op in RANGE_OPERATORS:
            number = MetaNumber(Item.meta, _meta_key(key))
            bound = bindparam(None, float(c.value), type_=Float())
            parts.append({">=": number >= bound, "<=": number <= bound, ">": number > bound, "<": number < bound}[c.op])
    return parts[0] if len(parts) == 1 else and_(*parts)


def _scalar_text(value: Any) -> str | None:
    """A stored meta scalar as the text filters compare with; None for null, lists and objects."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return value
    return None


def _as_float(number: float) -> float:
    """A JSON number as the float SQL compares: an int beyond float range is +-inf there too."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def _equals(key: str, value: str, meta: Mapping[str, Any], columns: Mapping[str, Any]) -> bool:
    if _column(key) is not None:
        return columns.get(key) == value
    stored = meta.get(_meta_key(key))
    if isinstance(stored, list):
        return any(_scalar_text(v) == value for v in stored if not isinstance(v, (list, dict)))
    return _scalar_text(stored) == value


def _key_matches(key: str, conds: Sequence[Condition], meta: Mapping[str, Any], columns: Mapping[str, Any]) -> bool:
    """In memory, what `_key_clause` says in SQL."""
    equal = [c for c in conds if c.op == "="]
    if equal and not any(_equals(key, str(c.value), meta, columns) for c in equal):
        return False
    for c in conds:
        if c.op == "!=" and _equals(key, str(c.value), meta, columns):
            return False
        if c.op in RANGE_OPERATORS:
            stored = meta.get(_meta_key(key))
            if isinstance(stored, bool) or not isinstance(stored, (int, float)):
                return False
            x, bound = _as_float(stored), float(c.value)
            if not {">=": x >= bound, "<=": x <= bound, ">": x > bound, "<": x < bound}[c.op]:
                return False
    return True


# ---- SQL constructs, rendered per dialect --------------------------------------------------
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


class MetaNumber(FunctionElement[float]):
    """`meta[key]` as a float when it is a JSON number, else NULL (so every comparison is false).

    The type is checked before the cast (a CASE), so a string never reaches CAST on PostgreSQL.
    """

    type = Float()
    name = "mmgen_meta_number"
    inherit_cache = False

    def __init__(self, column: ColumnElement[Any], key: str) -> None:
        super().__init__(column)
        self.column = column
        self.key = key


def _bind(compiler: SQLCompiler, value: str, **kw: Any) -> str:
    return compiler.process(cast(bindparam(None, value, type_=String()), Text()), **kw)


@compiles(MetaEquals)
def _meta_equals_default(element: MetaEquals, compiler: SQLCompiler, **kw: Any) -> str:
    # Scalars only: no portable way to look into lists on other backends.
    return compiler.process(element.column[element.key].as_string() == element.value, **kw)


@compiles(MetaEquals, "sqlite")
def _meta_equals_sqlite(element: MetaEquals, compiler: SQLCompiler, **kw: Any) -> str:
    # json_each yields the value itself for a scalar (key NULL), the elements for a list,
    # and the members of an object (excluded: only lists are looked into). A number compares
    # as its JSON text (`column -> fullkey`), as in memory: CAST(atom AS TEXT) would reformat
    # it (1e+20 as 1.0e+20, 1/3 to 15 digits, an integer beyond 64 bits as a float).
    column = compiler.process(element.column, **kw)
    path = _bind(compiler, f'$."{element.key}"', **kw)
    value = _bind(compiler, element.value, **kw)
    return (
        f"EXISTS (SELECT 1 FROM json_each({column}, {path}) AS mmgen_j "
        f"WHERE (mmgen_j.key IS NULL OR json_type({column}, {path}) = 'array') "
        "AND CASE mmgen_j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"WHEN 'integer' THEN ({column} -> mmgen_j.fullkey) WHEN 'real' THEN ({column} -> mmgen_j.fullkey) "
        f"ELSE CAST(mmgen_j.atom AS TEXT) END = {value})"
    )


@compiles(MetaEquals, "postgresql")
def _meta_equals_postgresql(element: MetaEquals, compiler: SQLCompiler, **kw: Any) -> str:
    # A scalar is wrapped in a one-element array so both cases read the same; only scalar
    # elements count (as SQLite: a nested list or object, or JSON null, matches nothing).
    column = compiler.process(element.column, **kw)
    key = _bind(compiler, element.key, **kw)
    value = _bind(compiler, element.value, **kw)
    node = f"(CAST({column} AS JSON) -> {key})"
    return (
        "EXISTS (SELECT 1 FROM json_array_elements("
        f"CASE WHEN json_typeof({node}) = 'array' THEN {node} ELSE json_build_array({node}) END"
        ") AS mmgen_j(v) WHERE json_typeof(mmgen_j.v) IN ('string', 'number', 'boolean') "
        f"AND (mmgen_j.v #>> '{{}}') = {value})"
    )


@compiles(MetaNumber)
def _meta_number_default(element: MetaNumber, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column[element.key].as_float(), **kw)


@compiles(MetaNumber, "sqlite")
def _meta_number_sqlite(element: MetaNumber, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    path = _bind(compiler, f'$."{element.key}"', **kw)
    return (
        f"(CASE WHEN json_type({column}, {path}) IN ('integer', 'real') "
        f"THEN CAST(json_extract({column}, {path}) AS REAL) END)"
    )


@compiles(MetaNumber, "postgresql")
def _meta_number_postgresql(element: MetaNumber, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    key = _bind(compiler, element.key, **kw)
    node = f"(CAST({column} AS JSON) -> {key})"
    return (
        f"(CASE WHEN json_typeof({node}) = 'number' "
        f"THEN CAST(CAST({column} AS JSON) ->> {key} AS DOUBLE PRECISION) END)"
    )
