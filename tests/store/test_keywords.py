"""The keyword index on SQLite (FTS5, BM25) and PostgreSQL (tsvector, GIN): back-fill on upgrade, kept in step
with every write, filters inside the ranking, safe plain queries and clear errors for malformed ones."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, text

from mmgen.errors import ConfigError
from mmgen.store import open_store
from mmgen.store.db import downgrade, upgrade
from mmgen.store.filters import parse_where
from mmgen.store.keywords import backend_query, keyword_search, query_words
from mmgen.store.models import Corpus, IndexRecord, IndexRow, Item

ROWS = [
    ("1F34E", "red apple", {"style": "twemoji", "tags": ["fruit", "delicious"]}),
    ("1F350", "pear", {"style": "twemoji", "tags": ["fruit"]}),
    ("1F34E-b", "red apple", {"style": "openmoji", "tags": ["fruit", "delicious"]}),
    ("kwaakwaa_frogs_01", "2 dead frogs", {"style": "openclipart", "keywords": ["kwaakwaa", "froggies"]}),
    ("1F697", "automobile", {"style": "twemoji", "tags": ["car", "driving"]}),
]


def _fill(s: Any) -> dict[str, int]:
    corpus = Corpus(name="c", source="spec")
    index = IndexRecord(name="default", encoder="e", encoder_checksum="x", dim=4, factory="Flat")
    s.add_all([corpus, index])
    s.flush()
    ids = {}
    for n, (key, caption, meta) in enumerate(ROWS):
        item = Item(corpus_id=corpus.id, key=key, modality="image+text", uri=f"/x/{key}.png", text=caption,
                    sha256=f"{n:064d}", group_key=key[:5], meta=meta)  # fmt: skip
        s.add(item)
        s.flush()
        s.add(IndexRow(index_id=index.id, modality="image", row_id=n, item_id=item.id, sha256=item.sha256))
        if n < 2:  # only the first two have text vectors
            s.add(IndexRow(index_id=index.id, modality="text", row_id=n, item_id=item.id, sha256=item.sha256))
        ids[key] = item.id
    s.commit()
    return ids


def test_plain_queries_rank_by_keywords_in_text_key_and_metadata(store: Any) -> None:
    with store.session() as s:
        ids = _fill(s)
        index_id = s.query(IndexRecord.id).scalar()
        found = keyword_search(s, index_id, "image", "apple", 10)
        assert {i for i, _ in found} == {ids["1F34E"], ids["1F34E-b"]}
        assert all(score > 0 for _, score in found)  # higher is better on both backends
        assert [i for i, _ in keyword_search(s, index_id, "image", "kwaakwaa", 10)] == [ids["kwaakwaa_frogs_01"]]
        assert [i for i, _ in keyword_search(s, index_id, "image", "driving", 10)] == [ids["1F697"]]  # a tag
        stemmed = keyword_search(s, index_id, "image", "apples", 10)  # English stemming on both
        assert {i for i, _ in stemmed} == {ids["1F34E"], ids["1F34E-b"]}
        # several words: any may match, items matching more rank first
        both = keyword_search(s, index_id, "image", "delicious red fruit", 10)
        assert {i for i, _ in both[:2]} == {ids["1F34E"], ids["1F34E-b"]} and ids["1F350"] in {i for i, _ in both}
        # filters apply inside the ranking; the modality restricts to items with such vectors
        only = keyword_search(s, index_id, "image", "fruit", 10, where=parse_where(["style=openmoji"]))
        assert [i for i, _ in only] == [ids["1F34E-b"]]
        assert {i for i, _ in keyword_search(s, index_id, "text", "fruit", 10)} == {ids["1F34E"], ids["1F350"]}
        assert len(keyword_search(s, index_id, "image", "fruit", 1)) == 1


def test_the_index_follows_inserts_updates_and_deletes(store: Any) -> None:
    with store.session() as s:
        ids = _fill(s)
        index_id = s.query(IndexRecord.id).scalar()
        car = s.get(Item, ids["1F697"])
        car.meta = {"style": "twemoji", "tags": ["vehicle"]}  # re-embedded with new metadata
        car.text = "sports car"
        s.commit()
        assert keyword_search(s, index_id, "image", "driving", 10) == []
        assert [i for i, _ in keyword_search(s, index_id, "image", "vehicle sports", 10)] == [ids["1F697"]]
        s.execute(delete(Item).where(Item.id == ids["1F350"]))  # pruned
        s.commit()
        assert ids["1F350"] not in {i for i, _ in keyword_search(s, index_id, "image", "pear fruit", 10)}


def test_user_text_is_never_syntax_and_malformed_fts_is_a_clear_error(store: Any) -> None:
    with store.session() as s:
        _fill(s)
        index_id = s.query(IndexRecord.id).scalar()
        for hostile in ('apple" OR "', "NOT apple AND (", "apple*) NEAR(", "'; DROP TABLE items; --", "a:b & | !"):
            keyword_search(s, index_id, "image", hostile, 5)  # plain: only its words are matched
        assert s.execute(text("SELECT count(*) FROM items")).scalar() == len(ROWS)
        with pytest.raises(ConfigError, match="malformed keyword query"):
            keyword_search(s, index_id, "image", '"unbalanced AND (', 5, syntax="fts")
        with pytest.raises(ConfigError, match="no words"):
            keyword_search(s, index_id, "image", "!!! ???", 5)
        with pytest.raises(ConfigError, match="syntax must be"):
            keyword_search(s, index_id, "image", "apple", 5, syntax="regex")
        # the session is usable after an error
        assert keyword_search(s, index_id, "image", "apple", 5)


def test_query_words_and_backend_strings() -> None:
    assert query_words("Red  apple, red!") == ["red", "apple"]
    assert backend_query('say "hi"', "sqlite") == '"say" OR "hi"'
    assert backend_query("say hi", "postgresql") == "'say' | 'hi'"
    assert backend_query("x AND y", "sqlite", "fts") == "x AND y"


def test_an_0002_store_with_items_is_back_filled_on_upgrade(db_url: str) -> None:
    upgrade(db_url, "0002")
    with open_store(db_url, upgrade=False) as old, old.session() as s:
        ids = _fill(s)
    upgrade(db_url)
    with open_store(db_url) as new, new.session() as s:
        index_id = s.query(IndexRecord.id).scalar()
        assert [i for i, _ in keyword_search(s, index_id, "image", "kwaakwaa", 5)] == [ids["kwaakwaa_frogs_01"]]
    downgrade(db_url, "0002")
    with open_store(db_url, upgrade=False) as back, back.session() as s:
        assert s.query(Item).count() == len(ROWS)  # the items stay; only the keyword index goes
